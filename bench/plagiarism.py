"""Does the network copy its training pieces? The longest run of events (pitch and
duration) that an improvisation shares verbatim with any of the model's training pieces,
beside the same for Bach's own held-out pieces against the training pieces (his suites
quote each other too). A run of 16 or more would be a quotation a listener could hear.

Usage: python bench/plagiarism.py [--model NAME] [--pieces 24] [--notes 300]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "services"))

from playbach.schemas import DEFAULT_MODEL, DEFAULT_TOP_P  # noqa: E402
from playbach.vocab import Event  # noqa: E402
from trainer import judge  # noqa: E402
from trainer.improvise import corpus_pieces  # noqa: E402

QUOTE = 16  # events


def keyed(piece: list[Event]) -> list[tuple]:
    return [(e.midi, e.duration) for e in piece if not e.is_rest]


def longest_shared(piece: list[tuple], grams: dict[int, set[tuple]]) -> int:
    """The longest run of ``piece`` found verbatim in the training pieces (up to 64)."""
    best = 0
    for n in sorted(grams):
        if any(tuple(piece[i:i + n]) in grams[n] for i in range(len(piece) - n + 1)):
            best = n
        else:
            break
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--pieces", type=int, default=24)
    ap.add_argument("--notes", type=int, default=300)
    args = ap.parse_args()
    folder = REPO / "models" / args.model
    train = [keyed(p) for p in corpus_pieces(folder, ("train",))]
    grams = {n: {tuple(p[i:i + n]) for p in train for i in range(len(p) - n + 1)}
             for n in (*range(1, 33), 48, 64)}
    played = [keyed(p) for p in judge.improvisations(folder, args.pieces, args.notes, 1.0,
                                                     DEFAULT_TOP_P, 0)]
    held = [keyed(p) for p in corpus_pieces(folder, ("test",))]
    for label, pieces in (("improvisations", played), ("Bach's held-out pieces", held)):
        runs = np.array([longest_shared(p, grams) for p in pieces])
        print(f"{label}: {len(runs)}, longest run shared with the training pieces: median "
              f"{np.median(runs):g}, max {runs.max()}; {np.mean(runs >= QUOTE):.0%} quote "
              f"{QUOTE} events or more")


if __name__ == "__main__":
    main()
