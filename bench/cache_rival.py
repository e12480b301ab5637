"""Is the network more than a cache? A rival that copies, fold by fold: the best n-gram of a
cross-validation result mixed with what the piece itself played after the longest earlier
match of its last steps (pitch and duration both equal, up to 16 steps, any distance back:
the network's --copy-match sees the same), the mixture's weight per match length fitted on
the fold's validation pieces. Scored on every step of the same unseen pieces, beside the
network and the n-gram the result holds (the n-gram is recomputed here as a check).

Usage: python bench/cache_rival.py RESULT.json [--out FILE.json] [--fold-models DIR]
  RESULT.json: `trainer crossval --out` of the suites (its folds, config and corpus).
  --fold-models RUNS_DIR/crossval: that run's fold models (each crossval run overwrites
  them): the network beside the rival by match length, where each wins."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from playbach.settings import REPO
from playbach.vocab import EncodingOptions, Vocabulary
from trainer.config import TrainConfig, with_defaults
from trainer.corpus import load_corpus, midi_paths
from trainer.crossval import _clear, _stat, stratified_splits
from trainer.dataset import encode
from trainer.ngram import NGram, best_ngram, summary
from trainer.settings import TrainerSettings

LONGEST = 16  # as the shipped --copy-match
WEIGHTS = np.r_[np.arange(0.0, 0.95, 0.05), 0.95, 0.98, 0.99, 0.995, 0.999]
HEADS = ("pitch", "duration")
BUCKETS = {"no match": (0, 0), "1-7": (1, 7), "8-15": (8, 15), "16": (16, 16)}


def longest_matches(steps: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """For each t >= 1 (predicting ``steps[t]`` from the steps before): m, the most steps
    (up to LONGEST) that end at t - 1 and also ended at some u - 1 < t - 1, and every such u
    (what followed there is ``steps[u]``). m = 0: the last step never came before."""
    n = len(steps)
    same = (steps[:, None, :] == steps[None, :, :]).all(-1)
    longest = np.zeros(n, int)
    where: list[np.ndarray] = [np.zeros(0, int)] * n
    before = np.zeros(n, int)  # runs ending at t - 2 and u - 1, by u
    for t in range(1, n):
        run = np.zeros(n, int)  # runs ending at t - 1 and u - 1, by u (u < t)
        run[1:t] = same[t - 1, :t - 1] * np.minimum(before[:t - 1] + 1, LONGEST)
        longest[t] = run.max()
        if longest[t]:
            where[t] = np.flatnonzero(run == longest[t])
        before = run
    return longest, where


def step_probs(ngram: NGram, seq: np.ndarray, head: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per scored step: the n-gram's distribution [T-1, size], the copy's [T-1, size] (zero
    where nothing matched) and the match length [T-1]."""
    tokens = seq[:, head]
    longest, where = longest_matches(seq[:, :2])
    grams = np.stack([ngram.probs(tokens[:t]) for t in range(1, len(seq))])
    copy = np.zeros_like(grams)
    for t in range(1, len(seq)):
        if longest[t]:
            copy[t - 1] = np.bincount(tokens[where[t]], minlength=ngram.size)[:ngram.size]
            copy[t - 1] /= copy[t - 1].sum()
    return grams, copy, longest[1:]


def fit_weights(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                targets: list[np.ndarray]) -> np.ndarray:
    """Per match length 1..LONGEST, the copy's weight with the most likelihood on ``parts``."""
    pairs = list(zip(parts, targets, strict=True))
    a = np.concatenate([g[np.arange(len(y)), y] for (g, _, _), y in pairs])
    b = np.concatenate([c[np.arange(len(y)), y] for (_, c, _), y in pairs])
    m = np.concatenate([m for _, _, m in parts])
    weights = np.zeros(LONGEST + 1)
    for k in range(1, LONGEST + 1):
        here = m == k
        if here.any():
            ll = [np.log((1 - w) * a[here] + w * b[here] + 1e-12).sum() for w in WEIGHTS]
            weights[k] = WEIGHTS[int(np.argmax(ll))]
    return weights


def mixed(part: tuple[np.ndarray, np.ndarray, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """The rival's distribution per step: the copy weighed by its match length."""
    grams, copy, longest = part
    w = weights[longest][:, None]
    return (1 - w) * grams + w * copy


def scores(parts, targets, weights: np.ndarray) -> dict[str, float]:
    nll, right, n = 0.0, 0, 0
    for part, y in zip(parts, targets, strict=True):
        p = mixed(part, weights)
        nll -= float(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)).sum())
        right += int((p.argmax(-1) == y).sum())
        n += len(y)
    return summary(right, nll, n)


def by_match(parts, targets, weights: np.ndarray, logp: list[np.ndarray]) -> dict:
    """Network and rival, accuracy and nats, on the steps of each match length bucket."""
    m = np.concatenate([m for _, _, m in parts])
    y = np.concatenate(targets)
    rival = np.concatenate([mixed(part, weights) for part in parts])
    net = np.exp(np.concatenate(logp))
    out = {}
    for name, (low, high) in BUCKETS.items():
        at = np.flatnonzero((m >= low) & (m <= high))
        out[name] = {"steps": len(at), **{who: summary(
            int((p[at].argmax(-1) == y[at]).sum()),
            float(-np.log(np.maximum(p[at, y[at]] / p[at].sum(-1), 1e-12)).sum()), len(at))
            for who, p in (("network", net), ("rival", rival))}}
    return out


def network_log_probs(fold_dir: Path, cfg: TrainConfig, train, test, options
                      ) -> list[dict[str, np.ndarray]]:
    import keras

    import trainer.model  # noqa: F401  (registers the custom layers)
    from trainer import heldout

    model = keras.models.load_model(fold_dir / "best.keras")
    return heldout.log_probs(model, test, heldout.Hidden.fitted(cfg, train, options.octaves))


def rival_fold(seqs: list[np.ndarray], split, sizes, logps=None) -> dict:
    train, val, test = ([seqs[i] for i in part] for part in split)
    out: dict = {"ngram": {}, "rival": {}, "weights": {}, "by_match": {}}
    for j, head in enumerate(HEADS):
        ngram, _ = best_ngram([s[:, j] for s in train], [s[:, j] for s in val], sizes[j])
        fit_parts = [step_probs(ngram, s, j) for s in val]
        weights = fit_weights(fit_parts, [s[1:, j] for s in val])
        parts = [step_probs(ngram, s, j) for s in test]
        targets = [s[1:, j] for s in test]
        out["ngram"][head] = scores(parts, targets, np.zeros(LONGEST + 1))
        out["rival"][head] = scores(parts, targets, weights)
        out["weights"][head] = [round(float(w), 3) for w in weights[1:]]
        if logps is not None:
            out["by_match"][head] = by_match(parts, targets, weights,
                                             [lp[head] for lp in logps])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--fold-models", type=Path)
    args = ap.parse_args()
    result = json.loads(args.result.read_text())
    cfg = TrainConfig(**with_defaults(result["config"]))
    midi_dir = REPO / result["corpus"]["source"]
    options = EncodingOptions()
    corpus = load_corpus(str(midi_dir), midi_paths(midi_dir), options,
                         TrainerSettings().cache_dir, progress=False)
    vocab = Vocabulary(options)
    seqs = encode(corpus.pieces, vocab)
    splits = stratified_splits(seqs, result["k"], cfg, result["stratify"])
    rows = []
    for row in result["folds"]:
        split = splits[row["fold"] - 1]
        fold_dir = args.fold_models and args.fold_models / f"fold{row['fold'] - 1}"
        logps = network_log_probs(fold_dir, cfg, [seqs[i] for i in split[0]],
                                  [seqs[i] for i in split[2]], options) if fold_dir else None
        mine = rival_fold(seqs, split, vocab.sizes, logps)
        for head in HEADS:  # the same steps and n-gram as the result's, or this is no rival
            assert abs(mine["ngram"][head]["nats"] - row["ngram"][head]["nats"]) < 1e-6, head
        rows.append({"fold": row["fold"], "network": row["network"], **mine})
        print(f"fold {row['fold']}: " + "; ".join(
            f"{h} network {row['network'][h]['accuracy']:.1%} {row['network'][h]['nats']:.3f}"
            f" / rival {mine['rival'][h]['accuracy']:.1%} {mine['rival'][h]['nats']:.3f}"
            f" / n-gram {mine['ngram'][h]['accuracy']:.1%} {mine['ngram'][h]['nats']:.3f}"
            for h in HEADS), flush=True)
        for h, table in mine["by_match"].items():
            print(f"  {h} by match length: " + "; ".join(
                f"{k} {v['steps']} steps {v['network']['accuracy']:.1%} {v['network']['nats']:.3f}"
                f" / {v['rival']['accuracy']:.1%} {v['rival']['nats']:.3f}"
                for k, v in table.items()))
    summary_ = {}
    for h in HEADS:
        acc = [r["network"][h]["accuracy"] - r["rival"][h]["accuracy"] for r in rows]
        nats = [r["rival"][h]["nats"] - r["network"][h]["nats"] for r in rows]
        summary_[h] = {"rival": {k: _stat([r["rival"][h][k] for r in rows])
                                 for k in ("accuracy", "nats")},
                       "gap": {"accuracy": _stat(acc), "nats": _stat(nats),
                               "clear": bool(_clear(acc) and _clear(nats))}}
        g = summary_[h]["gap"]
        print(f"{h}: network - rival {100 * g['accuracy']['mean']:+.1f} ± "
              f"{100 * g['accuracy']['sd']:.1f} points, {g['nats']['mean']:+.3f} ± "
              f"{g['nats']['sd']:.3f} nats over {len(rows)} folds: "
              + ("clear" if g["clear"] else "NOT clear"))
    if args.out:
        args.out.write_text(json.dumps({"source": args.result.name, "longest": LONGEST,
                                        "summary": summary_, "folds": rows}, indent=1))


if __name__ == "__main__":
    main()
