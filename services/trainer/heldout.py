"""Honest numbers: per-head accuracy and nats per step on held-out pieces, every step scored,
beside the baselines (the best Kneser–Ney n-gram, unigram, repeat-previous) on the same steps."""

from __future__ import annotations

import numpy as np

from playbach.stepmodel import HEADS
from playbach.vocab import BOS_ID
from trainer.dataset import windows, xy
from trainer.ngram import RepeatPrevious, Unigram, best_ngram, summary


def network_scores(model, seqs: list[np.ndarray], batch: int = 8) -> dict[str, dict[str, float]]:
    """Whole pieces from their start token, as the model generates: every next token scored."""
    nll = dict.fromkeys(HEADS, 0.0)
    correct = dict.fromkeys(HEADS, 0)
    count = dict.fromkeys(HEADS, 0)
    for i in range(0, len(seqs), batch):
        group = seqs[i:i + batch]
        longest = max(len(s) for s in group)
        win = np.stack([np.pad(s, ((0, longest - len(s)), (0, 0))) for s in group])
        x, y, _ = xy(win, "seq2seq")
        logits = model(x, training=False)
        for h in HEADS:
            logp = log_softmax(logits[h])
            target = y[h]
            keep = win[:, 1:, 1] != BOS_ID  # every step but padding: every event counts
            picked = np.take_along_axis(logp, target[..., None], -1)[..., 0]
            nll[h] -= float(picked[keep].sum())
            correct[h] += int((logp.argmax(-1) == target)[keep].sum())
            count[h] += int(keep.sum())
    return {h: summary(correct[h], nll[h], count[h]) for h in HEADS}


def baseline_scores(train: list[np.ndarray], val: list[np.ndarray], held: dict[str, list],
                    sizes: tuple[int, ...]) -> dict[str, dict]:
    """The n-gram whose order did best on ``val``, the unigram and repeat-previous, per head,
    scored on every set in ``held`` (name -> pieces): ``{baseline: {set: {head: scores}}}``,
    and ``ngram_order``: the order chosen per head."""
    out: dict[str, dict] = {b: {k: {} for k in held} for b in ("ngram", "unigram", "repeat")}
    out["ngram_order"] = {}
    for j, h in enumerate(HEADS):
        tr, va = [s[:, j] for s in train], [s[:, j] for s in val]
        ngram, _ = best_ngram(tr, va, sizes[j])
        out["ngram_order"][h] = ngram.order
        models = {"ngram": ngram, "unigram": Unigram(sizes[j]).fit(tr),
                  "repeat": RepeatPrevious(sizes[j]).fit(tr)}
        for name, model in models.items():
            for k, seqs in held.items():
                out[name][k][h] = model.score([s[:, j] for s in seqs])
    return out


def log_softmax(logits) -> np.ndarray:
    lg = np.asarray(logits, np.float64)
    lg = lg - lg.max(-1, keepdims=True)
    return lg - np.log(np.exp(lg).sum(-1, keepdims=True))


def window_scores(model, seqs: list[np.ndarray], length: int, batch: int = 256
                  ) -> dict[str, dict[str, float]]:
    """The original project's way to predict: each step from the ``length`` steps before it
    only (at a piece's start, from the start step on). Every step scored, as above."""
    nll = dict.fromkeys(HEADS, 0.0)
    correct = dict.fromkeys(HEADS, 0)
    count = dict.fromkeys(HEADS, 0)

    def score(win: np.ndarray) -> None:
        x, y, _ = xy(win, "last")
        out = model(x, training=False)
        for h in HEADS:
            logp = log_softmax(np.asarray(out[h])[:, -1])
            target = y[h][:, -1]
            nll[h] -= float(np.take_along_axis(logp, target[:, None], -1).sum())
            correct[h] += int((logp.argmax(-1) == target).sum())
            count[h] += len(target)

    for seq in seqs:
        for t in range(1, min(length, len(seq))):  # the first windows are shorter
            score(seq[None, :t + 1])
    full = windows(seqs, length + 1, 1, pad=False)
    for i in range(0, len(full), batch):
        score(full[i:i + batch])
    return {h: summary(correct[h], nll[h], count[h]) for h in HEADS}


def end_accuracy(model, x: dict, y: dict, w: dict, batch: int = 256) -> float:
    """Pitch accuracy at the last step of each window (where its weight is not zero)."""
    hits, n = 0, 0
    for i in range(0, len(y["pitch"]), batch):
        logits = model({h: v[i:i + batch] for h, v in x.items()}, training=False)
        pred = np.asarray(logits["pitch"])[:, -1].argmax(-1)
        keep = w["pitch"][i:i + batch, -1] > 0
        hits += int((pred == y["pitch"][i:i + batch, -1])[keep].sum())
        n += int(keep.sum())
    return hits / max(n, 1)
