"""How sure of the key is a model? On its own validation pieces, with the true notes so far
(teacher forcing), the share of its note probability on each piece's seven most used pitch
classes, beside the share of the piece's notes that are in them.

Usage: python bench/key_mass.py [MODEL ...]   (default: the shipped models)"""

from __future__ import annotations

import sys

import numpy as np

from playbach.modeldir import model_dir
from playbach.schemas import DEFAULT_MODEL
from playbach.settings import REPO
from playbach.stepmodel import StepModel
from playbach.vocab import PITCH_OFFSET
from trainer.score import load_steps


def main_classes(seq: np.ndarray, size: int) -> np.ndarray:
    """Per pitch id: is it a note of one of the piece's seven most used pitch classes?"""
    notes = seq[:, 0][seq[:, 0] >= PITCH_OFFSET] - PITCH_OFFSET
    top = np.argsort(-np.bincount(notes % 12, minlength=12))[:7]
    ids = np.arange(size)
    return (ids >= PITCH_OFFSET) & np.isin((ids - PITCH_OFFSET) % 12, top)


def key_mass(name: str) -> tuple[float, float]:
    folder = model_dir(REPO / "models", name)
    model, (_, val) = StepModel(folder), load_steps(folder)
    mass, data = [], []
    for seq in val:
        inside = main_classes(seq, model.vocab.sizes[0])
        state = model.initial_state()
        for t in range(len(seq) - 1):
            logits, state = model.step(tuple(int(i) for i in seq[t, :3]), state)
            if seq[t + 1, 0] < PITCH_OFFSET:
                continue
            p = np.exp(logits[0] - logits[0].max())
            mass.append(p[inside].sum() / p[PITCH_OFFSET:].sum())
            data.append(inside[seq[t + 1, 0]])
    return float(np.mean(mass)), float(np.mean(data))


def main() -> None:
    names = sys.argv[1:] or [DEFAULT_MODEL, "chorales"]
    print(f"{'model':<14} {'network':>8} {'music':>8}   (share on the seven main pitch classes)")
    for name in names:
        net, music = key_mass(name)
        print(f"{name:<14} {net:>8.1%} {music:>8.1%}")


if __name__ == "__main__":
    main()
