"""`score`: a published model on any MIDI folder, every step, beside the baselines fitted on
that model's own training pieces (``corpus.npz`` in its directory). Runs the exported step
model with LiteRT, as the services do; writes nothing into the model directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from playbach.modeldir import ModelError
from playbach.stepmodel import HEADS, StepModel, log_softmax, pitch_log_probs
from playbach.vocab import JOIN_ID, PITCH_OFFSET
from trainer import heldout
from trainer.heldout import PRUNE
from trainer.ngram import summary

CORPUS_FILE = "corpus.npz"  # the model's training and validation steps, for its baselines


def save_steps(path: Path, train: list[np.ndarray], val: list[np.ndarray],
               test: list[np.ndarray]) -> None:
    """The token steps (not the context channels) of the training, validation and test
    pieces (the test pieces: Bach the model never read, for ``evaluate`` to judge too)."""
    arrays = {}
    for name, seqs in (("train", train), ("val", val), ("test", test)):
        arrays[name] = np.concatenate([s[:, :len(HEADS)] for s in seqs]).astype(np.int16)
        arrays[f"{name}_lengths"] = np.array([len(s) for s in seqs], np.int32)
    np.savez_compressed(path, **arrays)


def load_steps(folder: Path, parts: tuple[str, ...] = ("train", "val")
               ) -> tuple[list[np.ndarray], ...]:
    path = folder / CORPUS_FILE
    try:
        with np.load(path) as data:
            return tuple(
                np.split(data[name].astype(np.int32), np.cumsum(data[f"{name}_lengths"])[:-1])
                if name in data or name != "test" else [] for name in parts)
    except FileNotFoundError:
        raise ModelError(f"{folder.name} has no {CORPUS_FILE} (trained before scoring "
                         "existed): retrain it to score it") from None
    except (KeyError, ValueError, OSError) as exc:
        raise ModelError(f"{path} is unreadable: {exc}") from None


def step_log_probs(model: StepModel, seq: np.ndarray) -> dict[str, np.ndarray]:
    """``heldout.piece_log_probs`` through the step model: every key it knows run in lockstep
    from a fresh state, mixed by its posterior; a key PRUNE nats behind the likeliest leaves
    the mixture and is no longer run (the same rule as heldout's)."""
    keys = model.keys.hypotheses if model.keys is not None else (None,)
    states = {k: model.initial_state(k) for k in keys}
    told = dict.fromkeys(keys, 0.0)  # log-likelihood of the steps so far, per key
    out = {h: np.zeros((len(seq) - 1, size)) for h, size in zip(HEADS, model.vocab.sizes,
                                                               strict=True)}
    for t in range(len(seq) - 1):
        ids = tuple(int(i) for i in seq[t, :len(HEADS)])
        target = seq[t + 1, :len(HEADS)]
        best = max(told.values())
        alive = [k for k in states if told[k] >= best - PRUNE]
        norm = np.logaddexp.reduce([told[k] for k in alive])
        mixed = {h: [] for h in HEADS}
        for k in alive:
            (p, d, v), states[k] = model.step(ids, states[k])
            heads = (pitch_log_probs(p, d, model.joins), log_softmax(d), log_softmax(v))
            given = log_softmax(p[int(target[1] == JOIN_ID)]) if model.joins else heads[0]
            weight = told[k] - norm
            for h, lp in zip(HEADS, heads, strict=True):
                mixed[h].append(weight + lp)
            told[k] += float(given[target[0]] + heads[1][target[1]] + heads[2][target[2]])
        for h in HEADS:
            out[h][t] = np.logaddexp.reduce(mixed[h], axis=0)
        for k in set(states) - set(alive):
            del states[k], told[k]
    return out


def step_scores(model: StepModel, seqs: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Every step of every piece through the step model (see step_log_probs)."""
    nll = dict.fromkeys(HEADS, 0.0)
    correct = dict.fromkeys(HEADS, 0)
    n = 0
    for seq in seqs:
        logp = step_log_probs(model, seq)
        for j, h in enumerate(HEADS):
            target = seq[1:, j]
            nll[h] -= float(np.take_along_axis(logp[h], target[:, None], -1).sum())
            correct[h] += int((logp[h].argmax(-1) == target).sum())
        n += len(seq) - 1
    return {h: summary(correct[h], nll[h], n) for h in HEADS}


def score(folder: Path, seqs: list[np.ndarray], names: list[str]) -> dict:
    model = StepModel(folder)
    train, val = load_steps(folder)
    base = heldout.baseline_scores(train, val, {"held": seqs}, model.vocab.sizes)
    notes = [int(p) - PITCH_OFFSET for s in seqs for p in s[:, 0] if p >= PITCH_OFFSET]
    seen = [int(p) - PITCH_OFFSET for s in train for p in s[:, 0] if p >= PITCH_OFFSET]
    return {
        "model": folder.name, "pieces": len(seqs), "piece_names": names,
        "steps": int(sum(len(s) - 1 for s in seqs)),
        "range": {"pieces": [min(notes, default=0), max(notes, default=0)],
                  "training": [min(seen, default=0), max(seen, default=0)]},
        "network": step_scores(model, seqs),
        **{b: base[b]["held"] for b in ("ngram", "unigram", "repeat")},
        "ngram_order": base["ngram_order"],
    }


def report(result: dict) -> str:
    r = result["range"]
    lines = [f"model {result['model']} on {result['pieces']} pieces, {result['steps']} steps, "
             f"every step scored (notes {r['pieces'][0]}-{r['pieces'][1]}; its training "
             f"pieces {r['training'][0]}-{r['training'][1]}). accuracy / nats per step:",
             f"  {'head':<9} {'network':>15} {'n-gram':>15} {'unigram':>15} {'repeat':>15}"]
    for h in HEADS:
        lines.append(f"  {h:<9} " + " ".join(
            f"{result[m][h]['accuracy']:>8.1%} {result[m][h]['nats']:>6.3f}"
            for m in ("network", "ngram", "unigram", "repeat")))
    lines.append("  n-gram orders (chosen on the model's validation pieces): " + ", ".join(
        f"{h} {o}" for h, o in result["ngram_order"].items()))
    return "\n".join(lines)
