"""Keras model -> step.tflite (+ int8), checked against Keras with LiteRT, published atomically."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np

from playbach.stepmodel import HEADS, StepModel
from playbach.vocab import Vocabulary
from trainer.config import TrainConfig
from trainer.dataset import inputs
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


def check_parity(model: keras.Model, folder: Path, tokens: np.ndarray,
                 quantized: bool = False) -> dict[str, float]:
    """Run ``tokens`` [T, WIDTH] (ids and context) through the Keras model at once and their ids
    through the exported step model one step at a time; report the largest logit difference
    and how often the top-1 agrees."""
    ref = model(inputs(tokens[None]), training=False)
    ref = {h: np.asarray(ref[h])[0] for h in HEADS}
    step = StepModel(folder, quantized=quantized)
    state, diff, agree = step.initial_state(), 0.0, 0
    for t, ids in enumerate(tokens):
        logits, state = step.step(tuple(int(i) for i in ids[:len(HEADS)]), state)
        diff = max(diff, *(float(np.abs(lg - ref[h][t]).max())
                           for h, lg in zip(HEADS, logits, strict=True)))
        agree += int(np.argmax(logits[0]) == np.argmax(ref["pitch"][t]))
    return {"steps": len(tokens), "max_logit_diff": diff,
            "pitch_top1_agreement": agree / len(tokens)}
