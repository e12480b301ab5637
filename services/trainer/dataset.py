"""Pieces -> training arrays: splits by whole pieces, windows, per-head target weights."""

from __future__ import annotations

import numpy as np

from playbach.stepmodel import HEADS
from playbach.vocab import Vocabulary
from trainer.config import TrainConfig
from trainer.corpus import Piece

UNK_ID = 1


def split_pieces(pieces: list[Piece], cfg: TrainConfig) -> tuple[list[Piece], ...]:
    """Train / validation / test by whole pieces, so no window of a held-out piece is seen."""
    order = np.random.default_rng(cfg.seed).permutation(len(pieces))
    n_val = max(1, round(len(pieces) * cfg.val_fraction))
    n_test = max(1, round(len(pieces) * cfg.test_fraction))
    val = [pieces[i] for i in order[:n_val]]
    test = [pieces[i] for i in order[n_val:n_val + n_test]]
    train = [pieces[i] for i in order[n_val + n_test:]]
    return train, val, test


def encode(pieces: list[Piece], vocab: Vocabulary) -> list[np.ndarray]:
    """Each piece as int32 [1 + events, 3]: the start token, then (pitch, duration, velocity)."""
    return [np.array(vocab.encode_piece(p.events), np.int32) for p in pieces]


def windows(seqs: list[np.ndarray], length: int, stride: int, pad: bool = True) -> np.ndarray:
    """Windows of ``length`` steps; a piece's tail gets a last window aligned to its end.
    Shorter pieces are zero-padded (id 0, never a target) unless ``pad`` is off."""
    out = []
    for seq in seqs:
        if len(seq) < length:
            if pad:
                out.append(np.pad(seq, ((0, length - len(seq)), (0, 0))))
            continue
        starts = list(range(0, len(seq) - length + 1, stride))
        if starts[-1] != len(seq) - length:
            starts.append(len(seq) - length)
        out.extend(seq[s:s + length] for s in starts)
    return np.stack(out) if out else np.zeros((0, length, 3), np.int32)


def xy(win: np.ndarray, objective: str) -> tuple[dict, dict, dict]:
    """Inputs, targets and target weights of each head. Padding and <unk> pitches weigh 0;
    the `last` objective (the original project's) weighs only the final step."""
    x = {h: win[:, :-1, i] for i, h in enumerate(HEADS)}
    y = {h: win[:, 1:, i] for i, h in enumerate(HEADS)}
    valid = (y["duration"] != 0).astype(np.float32)
    if objective == "last":
        valid[:, :-1] = 0
    w = {h: valid for h in HEADS}
    w["pitch"] = valid * (y["pitch"] != UNK_ID)
    return x, y, w


def training_arrays(train: list[np.ndarray], val: list[np.ndarray], cfg: TrainConfig):
    """(x, y, w) for training and validation, by the configured split and objective."""
    length = cfg.seq_len + 1
    stride = 1 if cfg.objective == "last" else cfg.stride
    pad = cfg.objective != "last"
    if cfg.split == "windows":  # the original protocol: shuffle all windows, then split
        every = windows(train + val, length, stride, pad)
        order = np.random.default_rng(cfg.seed).permutation(len(every))
        n_val = max(1, round(len(every) * cfg.val_fraction))
        return xy(every[order[n_val:]], cfg.objective), xy(every[order[:n_val]], cfg.objective)
    return (xy(windows(train, length, stride, pad), cfg.objective),
            xy(windows(val, length, stride, pad), cfg.objective))
