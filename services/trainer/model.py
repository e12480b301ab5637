"""The network: embeddings -> stacked LSTM -> (local attention) -> one softmax head per token
kind; and its single-step twin for export, sharing the very same layers and weights."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from playbach.stepmodel import HEADS
from playbach.vocab import Vocabulary, token_midi
from trainer.config import TrainConfig


@keras.saving.register_keras_serializable("playbach")
class LocalAttention(layers.Layer):
    """Causal self-attention over the last ``window`` steps, with a residual and layer norm.

    Local (not over the whole past) so the step model can carry the window as fixed-size state."""

    def __init__(self, window: int, heads: int, key_dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.window, self.heads, self.key_dim = window, heads, key_dim
        self.mha = layers.MultiHeadAttention(heads, key_dim, name="mha")
        self.norm = layers.LayerNormalization(name="norm")

    def build(self, input_shape) -> None:
        self.mha.build(input_shape, input_shape)
        self.norm.build(input_shape)

    def call(self, x):
        t = ops.shape(x)[1]
        i, j = ops.arange(t)[:, None], ops.arange(t)[None, :]
        band = ops.logical_and(j <= i, i - j < self.window)
        mask = ops.broadcast_to(band[None], (ops.shape(x)[0], t, t))
        return self.norm(x + self.mha(x, x, attention_mask=mask))

    def step(self, x, memory, valid):
        """One step: ``x`` [B, U] attends over ``memory`` [B, W, U] (ending with x itself)."""
        a = self.mha(x[:, None], memory, attention_mask=(valid > 0.5)[:, None, :])
        return self.norm(x + a[:, 0])

    def get_config(self) -> dict:
        return {**super().get_config(), "window": self.window, "heads": self.heads,
                "key_dim": self.key_dim}


def note_features(vocab: Vocabulary) -> np.ndarray:
    """[pitch tokens, 128]: which MIDI notes each token sounds (multi-hot; specials and rests
    all zero). A fixed input beside the learned embedding, so a chord the network has rarely
    seen still shares what it knows about its notes."""
    table = np.zeros((len(vocab.pitch), 128), np.float32)
    for i, token in enumerate(vocab.pitch[3:], start=3):
        table[i, list(token_midi(token))] = 1.0
    return table


def build_model(vocab: Vocabulary, cfg: TrainConfig) -> keras.Model:
    """Sequence to sequence: logits of every head at every step."""
    keras.utils.set_random_seed(cfg.seed)
    sizes = vocab.sizes
    dims = (cfg.embed_pitch, cfg.embed_duration, cfg.embed_velocity)
    inputs = {h: keras.Input((None,), dtype="int32", name=h) for h in HEADS}
    embedded = [layers.Embedding(n, d, name=f"embed_{h}")(inputs[h])
                for h, n, d in zip(HEADS, sizes, dims, strict=True)]
    if cfg.note_features:
        table = note_features(vocab)
        notes = layers.Embedding(*table.shape, trainable=False, name="notes_pitch",
                                 embeddings_initializer=keras.initializers.Constant(table))
        embedded.append(notes(inputs["pitch"]))
    x = layers.Concatenate(name="embed")(embedded)
    for i in range(cfg.layers):
        x = layers.LSTM(cfg.units, return_sequences=True, dropout=cfg.dropout, name=f"lstm{i}")(x)
    if cfg.attention:
        x = LocalAttention(cfg.attention_window, cfg.attention_heads,
                           cfg.units // cfg.attention_heads, name="attention")(x)
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = {h: layers.Dense(n, name=f"{h}_head")(x) for h, n in zip(HEADS, sizes, strict=True)}
    model = keras.Model(inputs, outputs, name="playbach")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0),
        loss={h: loss for h in HEADS},
        loss_weights={"pitch": 1.0, "duration": 0.5, "velocity": 0.25},
        weighted_metrics={h: ["sparse_categorical_accuracy"] for h in HEADS},
    )
    return model


def state_size(cfg: TrainConfig) -> int:
    """Floats of recurrent state: (h, c) per LSTM layer, plus the attention window and its mask."""
    lstm = 2 * cfg.units * cfg.layers
    return lstm + (cfg.attention_window * (cfg.units + 1) if cfg.attention else 0)


def step_function(model: keras.Model, cfg: TrainConfig):
    """A tf.function computing one step of ``model``: (ids, state) -> (logits, next state)."""
    import tensorflow as tf

    embeds = [model.get_layer(f"embed_{h}") for h in HEADS]
    notes = model.get_layer("notes_pitch") if cfg.note_features else None
    lstms = [model.get_layer(f"lstm{i}") for i in range(cfg.layers)]
    attention = model.get_layer("attention") if cfg.attention else None
    heads = [model.get_layer(f"{h}_head") for h in HEADS]
    u, w = cfg.units, cfg.attention_window
    spec = [tf.TensorSpec([1], tf.int32, name=h) for h in HEADS]
    spec.append(tf.TensorSpec([1, state_size(cfg)], tf.float32, name="state"))

    @tf.function(input_signature=spec)
    def step(pitch, duration, velocity, state):
        parts = [e(t) for e, t in zip(embeds, (pitch, duration, velocity), strict=True)]
        x = tf.concat([*parts, notes(pitch)] if notes is not None else parts, -1)
        new, at = [], 0
        for lstm in lstms:
            h, c = state[:, at:at + u], state[:, at + u:at + 2 * u]
            at += 2 * u
            x, (h, c) = lstm.cell(x, [h, c], training=False)
            new += [h, c]
        if attention is not None:
            memory = tf.reshape(state[:, at:at + w * u], [1, w, u])
            valid = state[:, at + w * u:at + w * u + w]
            memory = tf.concat([memory[:, 1:], x[:, None]], 1)
            valid = tf.concat([valid[:, 1:], tf.ones([1, 1])], 1)
            x = attention.step(x, memory, valid)
            new += [tf.reshape(memory, [1, w * u]), valid]
        out = {h: layer(x) for h, layer in zip(HEADS, heads, strict=True)}
        out["state"] = tf.concat(new, -1)
        return out

    return step
