"""Honest numbers: per-head accuracy and perplexity on held-out pieces, beside the n-gram."""

from __future__ import annotations

import numpy as np

from playbach.stepmodel import HEADS
from trainer.dataset import UNK_ID, windows, xy
from trainer.ngram import NGram

NGRAM_ORDER = 4


def _skip(head: str) -> tuple[int, ...]:
    return (0, UNK_ID) if head == "pitch" else (0,)


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
            lg = np.asarray(logits[h], np.float64)
            logp = lg - lg.max(-1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
            target = y[h]
            keep = ~np.isin(target, _skip(h)) & (win[:, 1:, 1] != 0)
            picked = np.take_along_axis(logp, target[..., None], -1)[..., 0]
            nll[h] -= float(picked[keep].sum())
            correct[h] += int((lg.argmax(-1) == target)[keep].sum())
            count[h] += int(keep.sum())
    return {h: {"accuracy": correct[h] / max(count[h], 1),
                "perplexity": float(np.exp(nll[h] / max(count[h], 1))), "tokens": count[h]}
            for h in HEADS}


def ngram_scores(train: list[np.ndarray], held: list[np.ndarray], sizes: tuple[int, ...]
                 ) -> dict[str, dict[str, float]]:
    out = {}
    for j, h in enumerate(HEADS):
        model = NGram(NGRAM_ORDER, sizes[j], banned=_skip(h)).fit([s[:, j] for s in train])
        out[h] = model.score([s[:, j] for s in held], skip=_skip(h))
    return out


def window_end_accuracy(model, seqs: list[np.ndarray], length: int, batch: int = 256) -> float:
    """The original project's metric: the pitch after each ``length``-event window (stride 1)."""
    win = windows(seqs, length + 1, 1, pad=False)
    if not len(win):
        return float("nan")
    return end_accuracy(model, *xy(win, "last"), batch=batch)


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
