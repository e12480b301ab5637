"""Does the improvisation lock into one rhythm, and what locks it? The same model sampled
the way channels did before (nucleus sampling on the durations too), with the nucleus on the
pitch only, with no nucleus at all, and with the durations drawn warmer than the pitches
(fixed, and at the model's own fitted rhythm temperature, as channels sample now): for
excerpts from the start and the last excerpt of long improvisations (running free, a network
feeds on its own notes), the share of monotone excerpts (one inter-onset interval for 90%
of the notes or more), onsets per beat and triplets, beside held-out Bach's.

Usage: python bench/collapse.py [--model NAME | --fold-models DIR] [--pieces 12]
                                [--notes 300] [--long 1500] [--out FILE.json]"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "services"))

from playbach.schemas import DEFAULT_TOP_P  # noqa: E402
from playbach.stepmodel import Improviser, StepModel, distribution  # noqa: E402
from trainer import judge  # noqa: E402
from trainer import musicstats as ms  # noqa: E402


class DurationNucleus(Improviser):
    """The sampler before: the nucleus cut the durations' tail too."""

    def _durations(self, logits: np.ndarray, banned: tuple[int, ...]) -> np.ndarray:
        return distribution(logits, self.temperature, banned, self.top_p)


VARIANTS = {  # name -> (sampler, top-p, rhythm temperature; None: the model's own)
    "pitch and duration nucleus (before)": (DurationNucleus, DEFAULT_TOP_P, 1.0),
    "pitch nucleus": (Improviser, DEFAULT_TOP_P, 1.0),
    "no nucleus": (Improviser, 1.0, 1.0),
    "pitch nucleus, rhythm 1.1x warmer": (Improviser, DEFAULT_TOP_P, 1.1),
    "pitch nucleus, rhythm 1.2x warmer": (Improviser, DEFAULT_TOP_P, 1.2),
    "pitch nucleus, the model's fitted rhythm temperature (channels now)":
        (Improviser, DEFAULT_TOP_P, None),
}


def describe(excerpts: list) -> dict:
    top = np.array([ms.top_ioi_share(e) for e in excerpts])
    opb = np.array([ms.onsets_per_beat(e) for e in excerpts])
    trip = np.array([ms.triplet_share(e) for e in excerpts])
    return {"excerpts": len(excerpts), "monotone": round(float(np.mean(top >= judge.MONOTONE)),
                                                         3),
            "top_ioi_median": round(float(np.median(top)), 3),
            "onsets_per_beat": [round(float(x), 2) for x in np.percentile(opb, [10, 50, 90])],
            "triplet_share": round(float(trip.mean()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cello-suites")
    ap.add_argument("--fold-models", type=Path)
    ap.add_argument("--pieces", type=int, default=12, help="improvisations per model")
    ap.add_argument("--notes", type=int, default=300)
    ap.add_argument("--long", type=int, default=1500)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    folders = sorted(p.parent for p in args.fold_models.glob("*/meta.json")) if \
        args.fold_models else [REPO / "models" / args.model]
    held = [judge.held_out(f) for f in folders]
    result = {"models": [f.name for f in folders], "notes": args.notes, "long": args.long,
              "bach": describe([e for h in held for e in ms.excerpts(h.bach, args.notes)])}
    print(f"held-out Bach: {result['bach']}")
    for name, (sampler, top, warmth) in VARIANTS.items():
        t = time.time()
        start, late = [], []
        for h in held:
            model = StepModel(h.folder)
            for i in range(args.pieces):
                notes = list(sampler(model, 1.0, i, top_p=top, rhythm_temperature=warmth)
                             .notes(args.long))
                cut = ms.excerpts([notes], args.notes)
                start.append(cut[0])
                late.append(cut[-1])
        result[name] = {"start": describe(start), "late": describe(late)}
        print(f"{name}: from the start {result[name]['start']}; the last {args.notes} of "
              f"{args.long} {result[name]['late']} ({time.time() - t:.0f} s)", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
