"""Does the network follow a repeat? On one cross-validation fold's unseen pieces, per head: the
network's accuracy on the steps whose last 16 steps (pitch and duration) came 100-600 steps
earlier in the piece, beside what copying the step that followed them there gets (a dance's
written-out repeat), and its accuracy on the other steps.

Usage: python bench/followed.py FOLD_DIR [--folds 6] [--midi-dir data/cello-suites]
  FOLD_DIR: a fold's run of `trainer crossval` (RUNS_DIR/crossval/fold1 is fold 2), whose
  run.json gives the configuration, so the fold's pieces are found again."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from playbach.settings import REPO
from playbach.vocab import EncodingOptions, Vocabulary
from trainer.config import TrainConfig, with_defaults
from trainer.corpus import load_corpus, midi_paths
from trainer.crossval import STRATA, stratified_splits
from trainer.dataset import encode
from trainer.settings import TrainerSettings

CONTEXT, NEAREST, FARTHEST = 16, 100, 600


def copy_rule(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per next step: whether its CONTEXT steps before came NEAREST..FARTHEST steps earlier
    (the nearest such), and what followed them there ([T] bool, [T, 2] pitch and duration)."""
    n = len(steps) - 1
    found, guess = np.zeros(n, bool), np.zeros((n, 2), int)
    for t in range(CONTEXT - 1, n):
        here = steps[t - CONTEXT + 1:t + 1]
        for back in range(NEAREST, min(FARTHEST, t - CONTEXT + 1) + 1):
            if (steps[t - CONTEXT + 1 - back:t + 1 - back] == here).all():
                found[t], guess[t] = True, steps[t + 1 - back]
                break
    return found, guess


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fold_dir", type=Path)
    ap.add_argument("--folds", type=int, default=6)
    ap.add_argument("--midi-dir", type=Path, default=REPO / "data" / "cello-suites")
    ap.add_argument("--stratify", default="evenness", choices=list(STRATA))
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import trainer.model  # noqa: F401  (registers the custom layers)
    from trainer import heldout

    cfg = TrainConfig(**with_defaults(json.loads((args.fold_dir / "run.json").read_text())
                                      ["config"]))
    fold = int(args.fold_dir.name.removeprefix("fold"))
    options = EncodingOptions()
    corpus = load_corpus(str(args.midi_dir), midi_paths(args.midi_dir), options,
                         TrainerSettings().cache_dir, progress=False)
    seqs = encode(corpus.pieces, Vocabulary(options))
    train, _, test = stratified_splits(seqs, args.folds, cfg, args.stratify)[fold]
    model = keras.models.load_model(args.fold_dir / "best.keras")
    logps = heldout.log_probs(model, [seqs[i] for i in test], heldout.Hidden.fitted(
        cfg, [seqs[i] for i in train], options.octaves))
    print(f"fold {fold + 1}: per unseen piece, accuracy on the steps whose {CONTEXT} steps "
          f"before came {NEAREST}-{FARTHEST} steps earlier (network / copying what followed "
          "there) and on the rest")
    for i, logp in zip(test, logps, strict=True):
        steps = seqs[i][:, :2]
        found, guess = copy_rule(steps)
        cells = []
        for j, head in enumerate(("pitch", "duration")):
            right = logp[head].argmax(-1) == steps[1:, j]
            copied = guess[:, j] == steps[1:, j]
            repeat = (f"{right[found].mean():6.1%} / {copied[found].mean():6.1%}"
                      if found.any() else "     -          -  ")
            cells.append(f"{head} {repeat}, rest {right[~found].mean():6.1%}")
        print(f"  {corpus.pieces[i].name:<10} {found.mean():4.0%} of {len(found):4d} steps; "
              + "; ".join(cells))


if __name__ == "__main__":
    main()
