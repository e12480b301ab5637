"""How sure of the key is a model? On its own validation pieces, with the true notes so far
(teacher forcing), the share of its note probability on each piece's seven most used pitch
classes, beside the share of the piece's notes that are in them (known only in hindsight:
the whole piece decides its main classes). And is it sure enough? The pitch head's nats per
step at temperature 1 beside the best temperature on the same steps: a model too unsure
would do better sharpened (a temperature below 1).

Usage: python bench/key_mass.py [MODEL ...]   (default: the shipped models)"""

from __future__ import annotations

import sys

import numpy as np

from playbach.modeldir import model_dir
from playbach.schemas import DEFAULT_MODEL
from playbach.settings import REPO
from playbach.stepmodel import StepModel, log_softmax
from playbach.vocab import PITCH_OFFSET
from trainer.score import load_steps, step_log_probs


def main_classes(seq: np.ndarray, size: int) -> np.ndarray:
    """Per pitch id: is it a note of one of the piece's seven most used pitch classes?"""
    notes = seq[:, 0][seq[:, 0] >= PITCH_OFFSET] - PITCH_OFFSET
    top = np.argsort(-np.bincount(notes % 12, minlength=12))[:7]
    ids = np.arange(size)
    return (ids >= PITCH_OFFSET) & np.isin((ids - PITCH_OFFSET) % 12, top)


TEMPERATURES = np.round(np.arange(0.7, 1.31, 0.05), 2)


def key_mass(name: str) -> tuple[float, float, float, float, float]:
    """(network's share, music's share, nats at T=1, the best T, nats at the best T)."""
    folder = model_dir(REPO / "models", name)
    model, (_, val) = StepModel(folder), load_steps(folder)
    mass, data, nats = [], [], np.zeros(len(TEMPERATURES))
    for seq in val:
        inside = main_classes(seq, model.vocab.sizes[0])
        pitch = step_log_probs(model, seq)["pitch"]  # the key inferred, as in scoring
        for t in range(len(seq) - 1):
            for i, temp in enumerate(TEMPERATURES):
                nats[i] -= log_softmax(pitch[t] / temp)[seq[t + 1, 0]]
            if seq[t + 1, 0] < PITCH_OFFSET:
                continue
            p = np.exp(pitch[t] - pitch[t].max())
            mass.append(p[inside].sum() / p[PITCH_OFFSET:].sum())
            data.append(inside[seq[t + 1, 0]])
    nats /= sum(len(s) - 1 for s in val)
    best = int(np.argmin(nats))
    return (float(np.mean(mass)), float(np.mean(data)), float(nats[TEMPERATURES == 1.0][0]),
            float(TEMPERATURES[best]), float(nats[best]))


def main() -> None:
    names = sys.argv[1:] or [DEFAULT_MODEL, "chorales"]
    print(f"{'':<14} {'share on the 7 main classes':>27}   {'pitch nats per step':>30}")
    print(f"{'model':<14} {'network':>13} {'music':>13}   {'at T=1':>10} {'best T':>8} "
          f"{'at best T':>10}")
    for name in names:
        net, music, nats, temp, best = key_mass(name)
        print(f"{name:<14} {net:>13.1%} {music:>13.1%}   {nats:>10.4f} {temp:>8.2f} "
              f"{best:>10.4f}")


if __name__ == "__main__":
    main()
