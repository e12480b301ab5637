"""The network and its single-step twin for export, sharing the very same layers and weights.

Per step it reads the three token ids and the context channels (``dataset.context``: the
last note, the interval it made, the onset in the bar cycle, the place in the chord, the
notes the next one moves from and the piece's key; the pitch-class profile with
``key_profile``):

    tokens + context -> embeddings -> stacked LSTM -> heads
    pitch    = absolute logits + logits by interval from the last note      (relative)
               + logits by interval from the same voice a chord before and   (voices)
                 from this chord's lowest note
               mixed with notes copied from the last `copy_window` steps    (Pointer)
               all of it given whether the step joins a chord                (joins)
               + a logit by mode, place in the chord and the intervals of the (KeyPrior)
                 last note and of this one from the key's tonic
    duration = logits + logits of an LSTM that reads only the rhythm         (Rhythm)
               mixed with durations copied the same way                      (Pointer)
    velocity = logits

With ``joins`` the network predicts p(duration) and p(pitch | the step joins a chord or not),
whose product is the joint of the two: a chord's next note and the next event's first note
are different questions, and answered together they made single-note "chords". Scores of
the pitch head alone are the marginal over both answers (``heldout``).

The step twin carries everything that needs a past in one float state vector (see
:func:`state_layout`), so the exported model stays "one invoke per step"."""

from __future__ import annotations

import keras
from keras import layers, ops

from playbach.keys import KEY_SLOTS
from playbach.stepmodel import HEADS
from playbach.vocab import JOIN_ID, MAX_CHORD, PITCH_OFFSET, Vocabulary
from trainer.config import TrainConfig
from trainer.dataset import CHORD_CONTEXT, CONTEXT, CYCLE, INTERVALS, KEY_CONTEXT, duration_ticks
from trainer.layers import (
    Heads,
    Inputs,
    Joins,
    KeyPrior,
    KeyProfile,
    Pointer,
    Rhythm,
)


def next_place(cfg: TrainConfig, voice, joins):
    """The row of KeyPrior for the step predicted: its place in its chord (one above this
    step's if it joins, else the lowest, 0), or without voices whether it joins; without
    ``joins`` (the network is not told) always 0."""
    if not cfg.joins:
        return ops.zeros_like(ops.cast(joins, "int32"))
    joins = ops.cast(joins, "int32")
    if not cfg.voices:
        return joins
    return ops.where(joins > 0, ops.minimum(ops.cast(voice, "int32") + 1, MAX_CHORD - 1), 0)




def build_model(vocab: Vocabulary, cfg: TrainConfig) -> keras.Model:
    """Sequence to sequence: logits (or log-probabilities) of every head at every step."""
    keras.utils.set_random_seed(cfg.seed)
    sizes = vocab.sizes
    inputs = {n: keras.Input((None,), dtype="int32", name=n) for n in (*HEADS, *CONTEXT)}
    inputs["profile"] = keras.Input((None, 12), dtype="int32", name="profile")
    names = (*CHORD_CONTEXT, *KEY_CONTEXT, "joins")
    inputs.update({v: keras.Input((None,), dtype="int32", name=v) for v in names})
    embed = Inputs(sizes, (cfg.embed_pitch, cfg.embed_duration, cfg.embed_velocity),
                   cfg.note_features, cfg.context, cfg.voices, name="inputs")
    profile = KeyProfile(name="key")(inputs["profile"]) if cfg.key_profile else None
    x = embed(inputs["pitch"], inputs["duration"], inputs["velocity"], inputs["interval"],
              inputs["onset"], profile, inputs["voice"])
    for i in range(cfg.layers):
        x = layers.LSTM(cfg.units, return_sequences=True, dropout=cfg.dropout, name=f"lstm{i}")(x)
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    pitch_x = Joins(name="join_shift")(x, inputs["joins"]) if cfg.joins else None
    logits = Heads(sizes, cfg.relative, cfg.key_profile, cfg.voices, name="heads")(
        x, inputs["last"], profile, inputs["join"], inputs["bass"], pitch_x)
    if cfg.rhythm:
        rhythm = Rhythm(sizes[1], cfg.rhythm, cfg.dropout, name="rhythm")
        logits[1] = logits[1] + rhythm(inputs["duration"], inputs["onset"])
    if cfg.copy:
        pointer = Pointer(cfg.copy_window, cfg.copy_dim, cfg.copy_duration, cfg.copy_recency,
                          cfg.copy_match, name="pointer")
        copied = pointer(x, inputs["pitch"], inputs["duration"], inputs["last"],
                         logits[:len(pointer.heads)], pitch_x)
        logits = [*copied, *logits[len(copied):]]
    if cfg.key:
        logits[0] = KeyPrior(name="key_prior")(logits[0], inputs["anchor"], inputs["mode"],
                                               next_place(cfg, inputs["voice"], inputs["joins"]),
                                               inputs["last"])
    outputs = {h: layers.Identity(name=f"{h}_logits")(lg)
               for h, lg in zip(HEADS, logits, strict=True)}
    model = keras.Model(inputs, outputs, name="playbach")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0),
        loss={h: loss for h in HEADS},
        loss_weights={"pitch": 1.0, "duration": cfg.duration_weight, "velocity": 0.25},
        weighted_metrics={h: ["sparse_categorical_accuracy"] for h in HEADS},
    )
    return model


def state_layout(cfg: TrainConfig) -> list[tuple[str, int]]:
    """The step model's state vector, in order: (name, floats). All zeros is the start, but
    for ``key`` (the key's anchor and mode, set by whoever starts the music and never changed
    by a step): ``last`` holds the last note + 1 (0: none yet), ``onset`` the next step's
    onset."""
    parts = [(f"{hc}{i}", cfg.units) for i in range(cfg.layers) for hc in "hc"]
    parts += [("last", 1), ("onset", 1)]
    if cfg.rhythm:
        parts += [("rhythm_h", cfg.rhythm), ("rhythm_c", cfg.rhythm)]
    if cfg.key:
        parts.append(("key", KEY_SLOTS))
    if cfg.key_profile:
        parts.append(("profile", 12))
    if cfg.voices:  # this chord's notes and the chord before's (MIDI + 1, 0: none), the place
        parts += [("chord", MAX_CHORD), ("before", MAX_CHORD), ("voice", 1)]
    if cfg.copy:
        w, kinds = cfg.copy_window, ("pitch", "interval", "duration")[:3 if cfg.copy_duration
                                                                        else 2]
        parts += [(f"keys_{k}", w * cfg.copy_dim) for k in kinds]
        parts += [(f"targets_{k}", w) for k in kinds]
        parts += [("valid", w), *((f"pending_{k}", cfg.copy_dim) for k in kinds),
                  ("pending_last", 1), ("pending", 1)]
        if cfg.copy_match:  # the steps' own tokens and their match lengths (Pointer.match)
            parts += [("seen_pitch", w), ("seen_duration", w), ("match", w),
                      ("pending_seen", 2)]
    return parts


def state_size(cfg: TrainConfig) -> int:
    return sum(n for _, n in state_layout(cfg))


def state_offset(cfg: TrainConfig, name: str) -> int:
    """Where ``name`` begins in the state vector."""
    at = 0
    for part, n in state_layout(cfg):
        if part == name:
            return at
        at += n
    raise KeyError(name)


def step_function(model: keras.Model, cfg: TrainConfig, vocab: Vocabulary):
    """A tf.function computing one step of ``model``: (ids, state) -> (logits, next state).
    It derives the context channels itself, as ``dataset.context`` does for whole pieces.
    With ``joins`` the pitch logits are [1, 2, size]: row 0 for a step that begins an event,
    row 1 for one that joins the chord (the duration logits say how likely each is)."""
    import tensorflow as tf

    embed, heads = model.get_layer("inputs"), model.get_layer("heads")
    shift = model.get_layer("join_shift") if cfg.joins else None
    prior = model.get_layer("key_prior") if cfg.key else None
    key = model.get_layer("key") if cfg.key_profile else None
    lstms = [model.get_layer(f"lstm{i}") for i in range(cfg.layers)]
    pointer = model.get_layer("pointer") if cfg.copy else None
    rhythm = model.get_layer("rhythm") if cfg.rhythm else None
    layout = state_layout(cfg)
    ticks = tf.constant(duration_ticks(vocab))
    spec = [tf.TensorSpec([1], tf.int32, name=h) for h in HEADS]
    spec.append(tf.TensorSpec([1, state_size(cfg)], tf.float32, name="state"))

    def unpack(state) -> dict:
        out, at = {}, 0
        for name, n in layout:
            out[name] = state[:, at:at + n]
            at += n
        return out

    @tf.function(input_signature=spec)
    def step(pitch, duration, velocity, state):
        s = unpack(state)
        before = tf.cast(s["last"][:, 0], tf.int32) - 1
        note = pitch >= PITCH_OFFSET
        last = tf.where(note, pitch - PITCH_OFFSET, before)
        interval = tf.where(note & (before >= 0), tf.clip_by_value(
            pitch - PITCH_OFFSET - before, -INTERVALS, INTERVALS) + INTERVALS + 1, 0)
        onset = (tf.cast(s["onset"][:, 0], tf.int32) + tf.gather(ticks, duration)) % CYCLE
        new, profile, voice, refs = {}, None, None, (None, None)
        if cfg.key_profile:
            new["profile"] = s["profile"] + tf.one_hot(
                (pitch - PITCH_OFFSET) % 12, 12) * tf.cast(note, tf.float32)[:, None]
            profile = key(new["profile"])
        if cfg.voices:
            voice, refs = chords(s, new, tf.where(note, pitch - PITCH_OFFSET, -1),
                                 duration == JOIN_ID)
        x = embed(pitch, duration, velocity, interval, onset, profile, voice)
        for i, lstm in enumerate(lstms):
            x, (new[f"h{i}"], new[f"c{i}"]) = lstm.cell(x, [s[f"h{i}"], s[f"c{i}"]],
                                                        training=False)
        # the pitch told "begins an event" and "joins the chord"; or once, told nothing
        pitch_xs = [shift(x, tf.fill([1], j)) for j in (0, 1)] if shift is not None else [None]
        per = [heads(x, last, profile, *refs, px) for px in pitch_xs]
        if rhythm is not None:
            beat, new["rhythm_h"], new["rhythm_c"] = rhythm.step(
                duration, onset, s["rhythm_h"], s["rhythm_c"])
            per = [[lg[0], lg[1] + beat, *lg[2:]] for lg in per]
        new["last"] = tf.cast(last + 1, tf.float32)[:, None]
        new["onset"] = tf.cast(onset, tf.float32)[:, None]
        if pointer is not None:
            memory = {name: s[name] for name, _ in layout if name not in new}
            w, dim = cfg.copy_window, cfg.copy_dim
            for k in pointer.kinds:
                memory[f"keys_{k}"] = tf.reshape(memory[f"keys_{k}"], [1, w, dim])
                memory[f"targets_{k}"] = tf.cast(memory[f"targets_{k}"], tf.int32)
            memory["valid"] = memory["valid"] > 0.5
            memory["pending"] = memory["pending"][:, 0] > 0.5
            memory["pending_last"] = tf.cast(memory["pending_last"][:, 0], tf.int32) - 1
            mem, keys, targets = pointer.advance(x, pitch, duration, last, memory)
            n = len(pointer.heads)
            per = [[*pointer.mix_step(x, mem, keys, targets, last, lg[:n], px), *lg[n:]]
                   for lg, px in zip(per, pitch_xs, strict=True)]
            for k in pointer.kinds:
                new[f"keys_{k}"] = tf.reshape(mem[f"keys_{k}"], [1, w * dim])
                new[f"targets_{k}"] = tf.cast(mem[f"targets_{k}"], tf.float32)
                new[f"pending_{k}"] = mem[f"pending_{k}"]
            new["valid"] = tf.cast(mem["valid"], tf.float32)
            for name in ("seen_pitch", "seen_duration", "match", "pending_seen"):
                if name in mem:
                    new[name] = mem[name]
            new["pending_last"] = tf.cast(mem["pending_last"] + 1, tf.float32)[:, None]
            new["pending"] = tf.cast(mem["pending"], tf.float32)[:, None]
        if prior is not None:  # the key: in the state, as whoever started the music set it
            new["key"] = s["key"]
            anchor, mode = (tf.cast(s["key"][:, i], tf.int32) for i in range(KEY_SLOTS))
            here = voice if voice is not None else tf.zeros_like(pitch)
            for j, lg in enumerate(per):
                lg[0] = prior(lg[0], anchor, mode, next_place(cfg, here, tf.fill([1], j)), last)
        logits = per[0] if shift is None else [tf.stack([per[0][0], per[1][0]], 1), *per[0][1:]]
        out = dict(zip(HEADS, logits, strict=True))
        out["state"] = tf.concat([new[name] for name, _ in layout], -1)
        return out

    return step


def chords(s: dict, new: dict, note, joined):
    """``dataset.voices`` one step at a time: the step's note (MIDI, -1 for none) joins the
    chord in ``s`` or begins the next one; fills ``new`` and returns (voice, (join, bass))."""
    import tensorflow as tf

    fresh = tf.one_hot(0, MAX_CHORD)[None] * tf.cast(note + 1, tf.float32)[:, None]
    voice = tf.where(joined, tf.minimum(tf.cast(s["voice"][:, 0], tf.int32) + 1, MAX_CHORD - 1),
                     0)
    placed = tf.one_hot(voice, MAX_CHORD)
    chord = tf.where(joined[:, None], s["chord"] * (1 - placed) + placed * tf.cast(
        note + 1, tf.float32)[:, None], fresh)
    before = tf.where(joined[:, None], s["before"], s["chord"])
    new["chord"], new["before"] = chord, before
    new["voice"] = tf.cast(voice, tf.float32)[:, None]
    above = tf.concat([before, tf.zeros_like(before[:, :1])], -1)  # no voice above the top
    join = tf.cast(tf.gather(above, voice + 1, axis=1, batch_dims=1), tf.int32) - 1
    return voice, (join, tf.where(voice > 0, tf.cast(chord[:, 0], tf.int32) - 1, -1))
