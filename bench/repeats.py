"""How far back does a piece repeat itself? Per piece, the share of its events whose 8 events
before occurred earlier in the same piece within D steps (so a pointer that looks D steps back
can find where the passage went on), for several D. A dance whose repeats are written out
scores about half, at the distance of its first half.

Usage: python bench/repeats.py [MIDI_DIR]   (default: data/cello-suites)"""

from __future__ import annotations

import sys
from pathlib import Path

from playbach.settings import REPO
from playbach.vocab import EncodingOptions
from trainer.corpus import load_corpus, midi_paths
from trainer.settings import TrainerSettings

CONTEXT = 8  # events that must match
REACH = (64, 128, 256, 512)


def nearest_match(tokens: list[tuple]) -> list[int | None]:
    """Per event, how many steps back the same CONTEXT events came last (None: never)."""
    seen: dict[tuple, int] = {}
    out: list[int | None] = []
    for i in range(len(tokens)):
        if i < CONTEXT:
            out.append(None)
            continue
        key = tuple(tokens[i - CONTEXT:i])
        out.append(i - seen[key] if key in seen else None)
        seen[key] = i
    return out


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "data" / "cello-suites"
    corpus = load_corpus(str(folder), midi_paths(folder), EncodingOptions(),
                         TrainerSettings().cache_dir, progress=False)
    print(f"share of events whose {CONTEXT} events before came earlier in the piece, "
          "within D steps")
    print(f"{'piece':<12} {'events':>6} " + " ".join(f"{'D=' + str(d):>6}" for d in REACH)
          + f" {'any':>6}")
    totals = [0] * (len(REACH) + 1)
    events = 0
    for piece in corpus.pieces:
        back = nearest_match([(ev.pitch, ev.duration) for ev in piece.events])
        found = [sum(b is not None and b <= d for b in back) for d in REACH]
        found.append(sum(b is not None for b in back))
        n = len(back)
        events += n
        totals = [t + f for t, f in zip(totals, found, strict=True)]
        print(f"{piece.name:<12} {n:>6} " + " ".join(f"{f / n:>6.2f}" for f in found))
    print(f"{'all':<12} {events:>6} " + " ".join(f"{t / events:>6.2f}" for t in totals))


if __name__ == "__main__":
    main()
