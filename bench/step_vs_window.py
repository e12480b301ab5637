"""Speed of the two ways to improvise, and of the two ways to train, side by side in one run.

1. Cost per generated note: the exported single-step TFLite model (LiteRT, state carried) versus
   the original approach, a Keras model re-run over the last 40 notes for every note.
2. Training time to the same validation accuracy: sequence-to-sequence (a label at every step)
   versus the original's one label per 40-note window, same network, same held-out pieces.

Usage: python bench/step_vs_window.py [--model cello-suites] [--notes 300] [--budget 240]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from playbach.schemas import DEFAULT_MODEL
from playbach.settings import REPO
from playbach.stepmodel import Improviser, StepModel

WINDOW = 40
CELLO = REPO / "data" / "cello-suites"


def per_note_costs(folder: Path, notes: int) -> dict[str, float]:
    """Seconds per note of each way, on the same model weights."""
    import keras
    import tensorflow as tf

    model = StepModel(folder)
    imp = Improviser(model, 1.0, seed=0)
    for _ in range(20):
        imp.next()
    t = time.perf_counter()
    events = [imp.next() for _ in range(notes)]
    step = (time.perf_counter() - t) / notes
    import trainer.model  # noqa: F401  (registers the network's own layers for loading)
    from trainer.dataset import context, duration_ticks, inputs

    ids = context(np.array([s for e in events for s in model.vocab.steps(e)], np.int32),
                  duration_ticks(model.vocab), imp.key)

    net = keras.models.load_model(folder / "model.keras")
    fn = tf.function(lambda x: net(x, training=False)["pitch"][:, -1], reduce_retracing=True)

    def window(i: int) -> dict[str, np.ndarray]:
        w = ids[max(0, i - WINDOW):i] if i else ids[:1]
        w = np.pad(w, ((WINDOW - len(w), 0), (0, 0)))
        x = inputs(w[None])  # one of the two joinings the step model answers: the window's
        return {**x, "joins": np.zeros_like(x["pitch"])}  # cost is understated, not inflated

    fn(window(1))
    t = time.perf_counter()
    for i in range(notes):
        fn(window(i)).numpy()
    compiled = (time.perf_counter() - t) / notes
    few = max(notes // 5, 20)  # predict() is slow: fewer notes suffice
    net.predict(window(1), verbose=0)
    t = time.perf_counter()
    for i in range(few):
        net.predict(window(i), verbose=0)
    predict = (time.perf_counter() - t) / few
    return {"step": step, "window_compiled": compiled, "window_predict": predict}


def _clock_class():
    import keras

    from trainer.dataset import windows, xy
    from trainer.heldout import end_accuracy

    def window_end_accuracy(model, seqs, length):
        return end_accuracy(model, *xy(windows(seqs, length + 1, 1, pad=False), "last"))

    class _Clock(keras.callbacks.Callback):
        """Training seconds only: the held-out evaluation after each epoch is not counted."""

        def __init__(self, label: str, val: list, budget: float) -> None:
            super().__init__()
            self.label, self.val, self.budget = label, val, budget
            self.curve: list[tuple[float, float]] = []
            self.start, self.paused = time.perf_counter(), 0.0

        def on_epoch_end(self, epoch, logs=None):
            spent = time.perf_counter() - self.start - self.paused
            t = time.perf_counter()
            self.curve.append((spent, window_end_accuracy(self.model, self.val, WINDOW)))
            self.paused += time.perf_counter() - t
            print(f"  {self.label:8} epoch {epoch + 1:3d}  {spent:6.1f} s  "
                  f"val accuracy {self.curve[-1][1]:.3f}", flush=True)
            if spent > self.budget:
                self.model.stop_training = True

    return _Clock


def training_race(budget: float, epochs: int) -> dict[str, list[tuple[float, float]]]:
    """(seconds, held-out window-end accuracy) after each epoch, for both objectives."""
    from playbach.vocab import EncodingOptions, Vocabulary
    from trainer.config import make_config
    from trainer.corpus import load_corpus, midi_paths
    from trainer.dataset import encode, split_pieces, training_windows, xy
    from trainer.model import build_model

    clock_class = _clock_class()
    corpus = load_corpus("cello suites", midi_paths(CELLO), EncodingOptions(),
                         Path.home() / ".cache" / "playbach", progress=False)
    curves = {}
    for objective in ("seq2seq", "last"):
        stride = 1 if objective == "last" else 20  # the original: every window
        cfg = make_config("default", [f"--objective={objective}", f"--seq_len={WINDOW}",
                                      f"--stride={stride}", "--units=128", "--dropout=0.2"])
        train, val, _ = split_pieces(corpus.pieces, cfg)
        vocab = Vocabulary(EncodingOptions())
        tr, va = encode(train, vocab), encode(val, vocab)
        x, y, w = xy(training_windows(tr, va, cfg)[0], cfg.objective)
        model = build_model(vocab, cfg)
        clock = clock_class(objective, va, budget)
        model.fit(x, y, sample_weight=w, batch_size=cfg.batch_size, epochs=epochs,
                  callbacks=[clock], verbose=0)
        curves[objective] = clock.curve
    return curves


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((s for s, acc in curve if acc >= target), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--notes", type=int, default=300)
    p.add_argument("--budget", type=float, default=240, help="seconds of training per objective")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--skip-training", action="store_true")
    args = p.parse_args()

    costs = per_note_costs(REPO / "models" / args.model, args.notes)
    print(f"\n1. cost per generated note ({args.notes} notes, model {args.model})")
    print(f"  TFLite step model (LiteRT, state carried)       {costs['step'] * 1e3:8.3f} ms")
    print(f"  Keras over the last {WINDOW} notes, tf.function      "
          f"{costs['window_compiled'] * 1e3:8.3f} ms  "
          f"({costs['window_compiled'] / costs['step']:.0f}x the step model)")
    print(f"  Keras over the last {WINDOW} notes, model.predict    "
          f"{costs['window_predict'] * 1e3:8.3f} ms  "
          f"({costs['window_predict'] / costs['step']:.0f}x; the original's way)")
    if args.skip_training:
        return
    print(f"\n2. training on the cello suites, up to {args.budget:.0f} s per objective")
    curves = training_race(args.budget, args.epochs)
    target = min(max(a for _, a in c) for c in curves.values())
    fast, slow = time_to(curves["seq2seq"], target), time_to(curves["last"], target)
    print(f"  target: {target:.3f} held-out accuracy (the best both reach)")
    print(f"  sequence-to-sequence reaches it in {fast:7.1f} s")
    print(f"  one label per window reaches it in {slow:7.1f} s  ({slow / fast:.1f}x longer)")


if __name__ == "__main__":
    main()
