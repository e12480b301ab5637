"""Judge results side by side, as markdown (docs/music.md): per result and excerpt length,
the classifier's balanced accuracy, the monotone share beside Bach's, the spread of the
tempo (onsets per beat) beside Bach's, how many statistics
have 70% of the excerpts inside Bach's 10th-90th percentile, and the statistics that do not.

Usage: python bench/judge_table.py LABEL=RESULT.json [LABEL=RESULT.json ...] [--who ngram]
  RESULT.json: `trainer judge --out`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

INSIDE = 0.7


def rows(label: str, result: dict, who: str) -> list[str]:
    out = []
    for n, entry in result["lengths"].items():
        if who not in entry:
            continue
        j = entry[who]
        c = j["classifier"]
        acc = "n/a" if c["balanced_accuracy"] is None else \
            f"{c['balanced_accuracy']:.2f} ± {c['sd']:.2f}"
        stats = j["statistics"]
        short = sorted((s["inside"], name) for name, s in stats.items() if s["inside"] < INSIDE)
        opb = stats.get("onsets_per_beat", {})
        tempo = (f"{opb['low']:.2f}–{opb['high']:.2f} ({opb['bach_low']:.2f}–"
                 f"{opb['bach_high']:.2f})") if "low" in opb else "–"
        out.append(f"| {label} | {n} | {j['excerpts']} / {j['bach_excerpts']} | {acc} | "
                   f"{j['monotone']:.0%} ({j['bach_monotone']:.0%}) | {tempo} | "
                   f"{len(stats) - len(short)} of {len(stats)} | "
                   + ", ".join(f"{name} {inside:.0%}" for inside, name in short) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="LABEL=RESULT.json")
    ap.add_argument("--who", default="network", help="network or ngram")
    args = ap.parse_args()
    print("| sampled | notes | excerpts / Bach's | classifier (0.5 = like Bach) | monotone "
          "(Bach) | onsets per beat, 10th–90th percentile (Bach) | statistics ≥ 70% inside | "
          "under 70% inside |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.results:
        label, _, path = spec.rpartition("=")
        for line in rows(label or path, json.loads(Path(path).read_text()), args.who):
            print(line)


if __name__ == "__main__":
    main()
