"""The README's music table from `python -m trainer crossval --out` results (see `make crossval`).

Usage: python bench/crossval_table.py bench/results/crossval-cello.json [more.json ...]
       python bench/crossval_table.py --changes base.json change.json [more.json ...]

Each file gives one block of rows: per head, the network and every baseline as mean ± sd over
the folds, and the network's gap to the best rival with whether it is clear (above 2 sd).
With --changes, one row per file: how its config differs from the first file's, and the gaps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {"network": "network", "ngram": "best n-gram", "unigram": "unigram",
         "repeat": "repeat previous", "window": "original window LSTM"}


def rows(result: dict) -> list[str]:
    corpus = result["corpus"]
    title = Path(corpus["source"]).name or corpus["source"]
    if "summary" not in result:  # a partial run summarises from its second fold on
        return [f"| **{title}**: {len(result.get('folds', []))} of {result['k']} folds so "
                "far: no mean ± sd before two | | | |"]
    s = result["summary"]
    folds = f"{s['folds']} folds" + ("" if result.get("stratify", "none") == "none" else
                                     f" stratified by {result['stratify']}")
    if result.get("partial"):  # a run still going (crossval --resume goes on with it)
        folds += f"; partial: {s['folds']} of {result['k']} folds so far"
    out = [f"| **{title}** ({corpus['pieces']} pieces, {corpus['steps']:,} steps, "
           f"{folds}) | | | |"]
    for head in ("pitch", "duration"):
        for model, stats in s["models"].items():
            acc, nats = stats[head]["accuracy"], stats[head]["nats"]
            out.append(f"| {head}: {NAMES.get(model, model)} | {acc['mean']:.1%} ± "
                       f"{acc['sd']:.1%} | {nats['mean']:.3f} ± {nats['sd']:.3f} | |")
        g = s["gaps"][head]
        out.append(f"| {head}: **gap to the best rival** | {g['accuracy']['mean'] * 100:+.1f} ± "
                   f"{g['accuracy']['sd'] * 100:.1f} pt | {g['nats']['mean']:+.3f} ± "
                   f"{g['nats']['sd']:.3f} | {'clear' if g['clear'] else 'not clear'} |")
    return out


def gap(g: dict) -> str:
    return (f"{g['accuracy']['mean'] * 100:+.1f} ± {g['accuracy']['sd'] * 100:.1f} pt, "
            f"{g['nats']['mean']:+.3f} ± {g['nats']['sd']:.3f}")


# Fields added since with a default that changes the network: what a run before them had.
BEFORE = {"voices": False, "key": False, "joins": False}


def config(result: dict) -> dict:
    """A run's config in today's fields: one that did not exist yet had today's default, or
    its value in BEFORE."""
    from dataclasses import asdict

    from trainer.config import TrainConfig

    defaults = {**asdict(TrainConfig()), **BEFORE}
    return {**{k: result["config"].get(k, v) for k, v in defaults.items()},
            "stratify": result.get("stratify", "none")}  # folds before it were random


def changes(results: list[dict]) -> list[str]:
    """What each change bought: the gaps of every run beside its config's difference."""
    base = config(results[0])
    out = ["| change (from the first row) | pitch gap | duration gap |", "|---|---|---|"]
    for r in results:
        diff = ", ".join(f"{k}={v}" for k, v in config(r).items() if base[k] != v)
        g = r["summary"]["gaps"]
        out.append(f"| {diff or 'as configured'} | {gap(g['pitch'])} | {gap(g['duration'])} |")
    return out


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--changes"]:
        print("\n".join(changes([json.loads(Path(p).read_text()) for p in args[1:]])))
        return
    print("| head: model | accuracy | nats per step | gap > 2 sd |")
    print("|---|---|---|---|")
    for path in args:
        print("\n".join(rows(json.loads(Path(path).read_text()))))


if __name__ == "__main__":
    main()
