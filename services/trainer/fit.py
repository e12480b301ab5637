"""The training loop: Keras fit with early stopping, best weights kept, resumable, logged."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np

from playbach.vocab import Vocabulary
from trainer.config import TrainConfig, UserError, stretches, with_defaults
from trainer.dataset import (
    duration_ticks,
    stretch,
    stretch_table,
    training_windows,
    transpose,
    xy,
)
from trainer.model import build_model

FRESH = ("pointer/distance",)  # weights --init may leave to training: new in the network


class Augmented(keras.utils.PyDataset):
    """Training batches in a new order and new keys every epoch (transposition augmentation:
    a movement in an unseen key or register is then no surprise)."""

    def __init__(self, wins: np.ndarray, cfg: TrainConfig, vocab: Vocabulary) -> None:
        super().__init__()
        self.wins, self.cfg, self.octaves = wins, cfg, vocab.options.octaves
        self.factors = stretches(cfg.stretch_factors)
        self.stretches = stretch_table(vocab, self.factors)
        self.ticks = duration_ticks(vocab)
        self.rng = np.random.default_rng(cfg.seed)
        self.on_epoch_end()

    def on_epoch_end(self) -> None:
        self.epoch = self.wins[self.rng.permutation(len(self.wins))]
        share = self.cfg.augment_share
        moved = self.rng.random(len(self.epoch)) < share if share < 1 else slice(None)
        self.epoch[moved] = transpose(self.epoch[moved], self.rng, self.cfg.aug_low,
                                      self.cfg.aug_high, self.octaves)
        if self.cfg.stretch_share > 0:  # (drawn only when on: runs without it stay the same)
            faster = self.rng.random(len(self.epoch)) < self.cfg.stretch_share
            self.epoch[faster] = stretch(self.epoch[faster], self.rng, self.stretches,
                                         self.ticks, self.factors)

    def __len__(self) -> int:
        return -(-len(self.wins) // self.cfg.batch_size)

    def __getitem__(self, i: int):
        b = self.cfg.batch_size
        return xy(self.epoch[i * b:(i + 1) * b], self.cfg.objective)


class Checkpoints(keras.callbacks.Callback):
    """``last.keras`` every epoch (what ``--resume`` continues), copied to ``best.keras`` when
    the validation loss is the lowest yet: one save an epoch, not two (0.15 s each; the
    suites' 100 epochs, nearly every one a best, spent 30 s saving)."""

    def __init__(self, last: Path, best: Path, best_loss: float | None) -> None:
        super().__init__()
        self.last, self.best, self.best_loss = last, best, best_loss

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.model.save(self.last)
        loss = (logs or {}).get("val_loss")
        if loss is not None and (self.best_loss is None or loss < self.best_loss):
            self.best_loss = loss
            tmp = self.best.with_suffix(".tmp")
            shutil.copyfile(self.last, tmp)
            os.replace(tmp, self.best)  # never half a best model


def start_from(model: keras.Model, path: Path) -> None:
    """Copy in the weights of a published model (``--init``): what it learnt from a larger
    corpus is where training on a smaller one starts. The network must be the same, or the
    same plus parts the source lacks (the pointer's distance bias), which start fresh."""
    source = {w.path: w for w in keras.models.load_model(path, compile=False).weights}
    mine = {w.path: w for w in model.weights}
    extra = sorted(p for p in source if p not in mine or mine[p].shape != source[p].shape)
    lacking = sorted(p for p in mine if p not in source and p not in FRESH)
    if extra or lacking:
        what = [f"{p} {tuple(source[p].shape)} has no place here" for p in extra[:2]]
        what += [f"it has no {p}" for p in lacking[:2]]
        raise UserError(f"--init: {path.parent.name} is a different network "
                        f"({'; '.join(what)})")
    for p, w in source.items():
        mine[p].assign(w.numpy())


def build_state(model: keras.Model, x: dict, y: dict, w: dict) -> None:
    """Create the optimizer's and the loss trackers' variables before ``fit`` traces: Keras's
    TensorFlow trainer creates them inside the first trace of the training step, and a
    ``tf.function`` that creates variables is traced again (twice the graph building, ~10 s
    a run here). One window (``x``, ``y``, ``w`` of one), eagerly; ``fit`` resets the
    trackers at every epoch."""
    pred = model(x, training=False)
    model.compute_loss(x=x, y=y, y_pred=pred, sample_weight=w)
    model.compute_metrics(x, y, pred, sample_weight=w)
    if not model.optimizer.built:  # a resumed run's optimizer comes with its moments
        model.optimizer.build(model.trainable_variables)


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def fit(cfg: TrainConfig, vocab: Vocabulary, train: list[np.ndarray],
        val: list[np.ndarray], run_dir: Path, identity: dict, resume: bool = False,
        verbose: int | None = None, extra_callbacks: Sequence = (), init: Path | None = None):
    """Train (or resume) in ``run_dir``; returns the best model, the history and the val arrays.

    ``identity`` (config, corpus fingerprint, vocabulary sizes) must match to resume."""
    train_wins, val_wins = training_windows(train, val, cfg)
    if not len(train_wins):
        raise UserError("no training windows: the pieces are shorter than seq_len allows")
    val_arrays = xy(val_wins, cfg.objective)
    last, best, log = run_dir / "last.keras", run_dir / "best.keras", run_dir / "history.csv"
    run_file = run_dir / "run.json"
    history = read_history(log)
    if resume:
        if not last.is_file():
            raise UserError(f"--resume: nothing to resume in {run_dir} (no last.keras)")
        before = json.loads(run_file.read_text())
        before["config"] = with_defaults(before.get("config", {}))
        if before != identity:
            changed = sorted(k for k in identity if before.get(k) != identity[k])
            raise UserError(f"--resume: the run in {run_dir} differs in {', '.join(changed)}")
        model = keras.models.load_model(last)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        run_file.write_text(json.dumps(identity, indent=1))
        model, history = build_model(vocab, cfg), []
        if init is not None:
            start_from(model, init)
    best_loss = min((h["val_loss"] for h in history), default=None)
    callbacks = [
        Checkpoints(last, best, best_loss),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience),
        keras.callbacks.CSVLogger(str(log), append=resume),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False),
        *extra_callbacks,
    ]
    if len(history) < cfg.epochs:
        build_state(model, *xy(train_wins[:1], cfg.objective))
    verbose = verbose if verbose is not None else (1 if sys.stdout.isatty() else 2)
    if len(history) < cfg.epochs and cfg.augment and cfg.split == "pieces":
        model.fit(Augmented(train_wins, cfg, vocab),
                  validation_data=val_arrays, epochs=cfg.epochs, initial_epoch=len(history),
                  callbacks=callbacks, verbose=verbose)
    elif len(history) < cfg.epochs:
        x, y, w = xy(train_wins, cfg.objective)
        model.fit(x, y, sample_weight=w, validation_data=val_arrays, batch_size=cfg.batch_size,
                  epochs=cfg.epochs, initial_epoch=len(history), shuffle=True,
                  callbacks=callbacks, verbose=verbose)
    model = keras.models.load_model(best if best.is_file() else last)
    return model, read_history(log), val_arrays


def plot(history: list[dict[str, float]], path: Path, title: str,
         baseline: float | None = None, baseline_name: str = "n-gram") -> None:
    """training.png: losses, and pitch accuracy against the n-gram baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [int(h["epoch"]) + 1 for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(epochs, [h["loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation")
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    ax1.axvline(epochs[best], color="grey", ls=":", label=f"best (epoch {epochs[best]})")
    ax1.set(xlabel="epoch", ylabel="loss (all heads)", title="loss")
    ax1.legend()
    key = "pitch_sparse_categorical_accuracy"
    ax2.plot(epochs, [h[key] for h in history], label="train")
    ax2.plot(epochs, [h["val_" + key] for h in history], label="validation")
    if baseline is not None:
        ax2.axhline(baseline, color="C3", ls="--", label=f"{baseline_name} (validation)")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="pitch accuracy")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def identity(cfg: TrainConfig, fingerprint: str, sizes: tuple[int, ...]) -> dict:
    return {"config": asdict(cfg), "fingerprint": fingerprint, "sizes": list(sizes)}
