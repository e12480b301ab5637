"""`score`: a published model on any MIDI folder, every step, beside the baselines fitted on
that model's own training pieces (``corpus.npz`` in its directory). Runs the exported step
model with LiteRT, as the services do; writes nothing into the model directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from playbach.modeldir import ModelError
from playbach.stepmodel import HEADS, StepModel
from playbach.vocab import PITCH_OFFSET
from trainer import heldout
from trainer.ngram import summary

CORPUS_FILE = "corpus.npz"  # the model's training and validation steps, for its baselines


def save_steps(path: Path, train: list[np.ndarray], val: list[np.ndarray]) -> None:
    """The token steps (not the context channels) of the training and validation pieces."""
    arrays = {}
    for name, seqs in (("train", train), ("val", val)):
        arrays[name] = np.concatenate([s[:, :len(HEADS)] for s in seqs]).astype(np.int16)
        arrays[f"{name}_lengths"] = np.array([len(s) for s in seqs], np.int32)
    np.savez_compressed(path, **arrays)


def load_steps(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    path = folder / CORPUS_FILE
    try:
        with np.load(path) as data:
            return tuple(  # type: ignore[return-value]
                np.split(data[name].astype(np.int32), np.cumsum(data[f"{name}_lengths"])[:-1])
                for name in ("train", "val"))
    except FileNotFoundError:
        raise ModelError(f"{folder.name} has no {CORPUS_FILE} (trained before scoring "
                         "existed): retrain it to score it") from None
    except (KeyError, ValueError, OSError) as exc:
        raise ModelError(f"{path} is unreadable: {exc}") from None


def step_scores(model: StepModel, seqs: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Every step of every piece through the step model, from a fresh state per piece."""
    nll = dict.fromkeys(HEADS, 0.0)
    correct = dict.fromkeys(HEADS, 0)
    n = 0
    for seq in seqs:
        state = model.initial_state()
        for t in range(len(seq) - 1):
            logits, state = model.step(tuple(int(i) for i in seq[t, :len(HEADS)]), state)
            for h, lg in zip(HEADS, logits, strict=True):
                logp = heldout.log_softmax(lg)
                target = int(seq[t + 1, HEADS.index(h)])
                nll[h] -= float(logp[target])
                correct[h] += int(np.argmax(logp) == target)
            n += 1
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
