"""Keras model -> step.tflite (+ int8), checked against Keras with LiteRT, published atomically."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np

from playbach.stepmodel import HEADS, StepModel
from playbach.vocab import Vocabulary
from trainer.config import TrainConfig
from trainer.dataset import inputs, piece_key
from trainer.model import step_function


def to_tflite(model: keras.Model, cfg: TrainConfig, vocab: Vocabulary) -> tuple[bytes, bytes]:
    """The float step model and its dynamic-range int8 twin."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved:
        archive = keras.export.ExportArchive()
        archive.track(model)  # all variables, including dropout seed state the graph references
        archive.add_endpoint("serving_default", step_function(model, cfg, vocab))
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        plain = converter.convert()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return plain, converter.convert()


def reference(model: keras.Model, tokens: np.ndarray, joins: bool) -> dict[str, np.ndarray]:
    """The Keras model's logits for ``tokens`` [T, WIDTH] (ids and context), all at once; with
    ``joins`` the pitch's as the step model gives them, a row per answer [T, 2, size]."""
    x = inputs(tokens[None])
    told = [{**x, "joins": np.full_like(x["pitch"], j)} for j in ((0, 1) if joins else (0,))]
    outs = [model(t, training=False) for t in told]
    ref = {h: np.asarray(outs[0][h])[0] for h in HEADS}
    if joins:  # the step model's pitch rows: begins an event, joins the chord
        ref["pitch"] = np.stack([np.asarray(o["pitch"])[0] for o in outs], 1)
    return ref


def check_parity(model: keras.Model, folder: Path, tokens: np.ndarray,
                 quantized: bool = False, ref: dict[str, np.ndarray] | None = None
                 ) -> dict[str, float]:
    """Run ``tokens`` [T, WIDTH] (ids and context, one key throughout) through the Keras model
    at once (or take its logits, ``ref``: an eager run costs seconds) and their ids through
    the exported step model one step at a time; report the largest logit difference and how
    often the top-1 pitch agrees."""
    step = StepModel(folder, quantized=quantized)
    ref = ref if ref is not None else reference(model, tokens, step.joins)
    state = step.initial_state(piece_key(tokens) if step.keys is not None else None)
    diff, agree = 0.0, 0
    for t, ids in enumerate(tokens):
        logits, state = step.step(tuple(int(i) for i in ids[:len(HEADS)]), state)
        diff = max(diff, *(float(np.abs(lg - ref[h][t]).max())
                           for h, lg in zip(HEADS, logits, strict=True)))
        agree += int(np.argmax(np.atleast_2d(logits[0])[0])
                     == np.argmax(np.atleast_2d(ref["pitch"][t])[0]))
    return {"steps": len(tokens), "max_logit_diff": diff,
            "pitch_top1_agreement": agree / len(tokens)}
