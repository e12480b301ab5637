"""`crossval`: k-fold cross-validation by whole pieces. In each fold the network and every
baseline are fitted on the same training pieces and scored on every step of the same unseen
pieces; the report is the mean and standard deviation over the folds, per head, and of the
network's gap to the best baseline (the gap counts only if it is larger than twice its sd)."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras
import numpy as np

from playbach.stepmodel import HEADS
from playbach.vocab import DURATION_OFFSET, Vocabulary
from trainer import heldout
from trainer.config import TrainConfig, UserError, with_defaults
from trainer.corpus import Corpus
from trainer.dataset import encode
from trainer.fit import fit, identity

WINDOW = 40  # the original project's window
WINDOW_PATIENCE = 10
BASELINES = ("ngram", "unigram", "repeat")
METRICS = ("accuracy", "nats", "bits")


@dataclass
class CrossVal:
    cfg: TrainConfig
    vocab: Vocabulary
    corpus: Corpus
    folds: int
    runs_dir: Path
    window_model: bool = False  # also the original project's window LSTM
    window_stride: int = 1  # its windows' step: the original's 1 costs ~5x the network's time
    init: Path | None = None  # model.keras of the published model to start each fold from
    progress: bool = True
    stratify: str = "evenness"  # how folds are balanced (STRATA)
    out: Path | None = None  # the result, written after every fold too (partial)
    resume: bool = False  # keep the folds a run with the same identity wrote to ``out``
    only: tuple[int, ...] = ()  # run only these folds (1-based; with ``resume``, kept ones too)
    export: Path | None = None  # each fold's network as a model directory here (fold<k>/)


def fold_indices(n: int, k: int, seed: int, val_fraction: float,
                 strata: Sequence[float] | None = None
                 ) -> list[tuple[list[int], list[int], list[int]]]:
    """(train, val, test) piece indices per fold: every piece is tested exactly once; the
    validation pieces (early stopping, the n-gram's order) come out of the training side.
    With ``strata`` (a number per piece), the pieces are ranked by it and each run of k
    consecutive ranks is dealt out one piece per fold, in a random order: every fold gets
    pieces from the whole range (stratified k-fold), so the folds differ by chance, not
    because one drew all the easy pieces."""
    if not 2 <= k <= n:
        raise UserError(f"--folds must be between 2 and the number of pieces ({n}), not {k}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n).tolist()
    if strata is None:
        tests = [order[f::k] for f in range(k)]
    else:
        ranked = sorted(order, key=lambda i: strata[i])  # ties in the random order
        tests = [[] for _ in range(k)]
        for start in range(0, n, k):
            block = ranked[start:start + k]
            for f, i in zip(rng.permutation(k)[:len(block)], block, strict=True):
                tests[f].append(i)
    out = []
    for test in tests:
        rest = [i for i in order if i not in test]
        n_val = max(1, round(len(rest) * val_fraction))
        out.append((rest[n_val:], rest[:n_val], sorted(test)))
    return out


def evenness(seq: np.ndarray) -> float:
    """The share of a piece's events that have its commonest duration (1: one rhythm
    throughout, as in a prelude of even sixteenths): what set the suites' folds apart."""
    durations = seq[1:, 1][seq[1:, 1] >= DURATION_OFFSET]
    return float(np.bincount(durations).max() / len(durations)) if len(durations) else 1.0


STRATA = {"none": None, "evenness": evenness}


def stratified_splits(seqs: list[np.ndarray], k: int, cfg: TrainConfig, stratify: str
                      ) -> list[tuple[list[int], list[int], list[int]]]:
    """The folds of a cross-validation of ``seqs`` (its bench scripts find them again)."""
    by = STRATA[stratify]
    return fold_indices(len(seqs), k, cfg.seed, cfg.val_fraction,
                        None if by is None else [by(s) for s in seqs])


class _EpochBar(keras.callbacks.Callback):
    def __init__(self, bar, fold: str) -> None:
        super().__init__()
        self.bar, self.fold = bar, fold

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.bar.set_postfix_str(f"{self.fold}, epoch {epoch + 1}, "
                                 f"val loss {(logs or {}).get('val_loss', float('nan')):.3f}")


def window_config(cfg: TrainConfig, stride: int) -> TrainConfig:
    """The original project's network: an LSTM reading the 40 steps before a step, trained on
    every window's last label, no context, no pointer, no other keys. It stops 10 epochs
    after its best (the best weights kept), whatever the network's patience: on the suites
    it is best after ~15 epochs and only overfits after (the network's 100 cost 25 minutes
    a fold for nothing)."""
    return replace(cfg, objective="last", seq_len=WINDOW, stride=stride, relative=False,
                   context=False, copy=False, note_features=False, augment=False,
                   original_protocol=False, voices=False, key=False, joins=False, init="",
                   rhythm=0, duration_weight=TrainConfig.duration_weight,
                   patience=min(cfg.patience, WINDOW_PATIENCE))


def run_fold(cv: CrossVal, f: int, split, seqs: list[np.ndarray], bar) -> dict:
    train, val, test = ([seqs[i] for i in part] for part in split)
    started = time.time()
    ident = identity(cv.cfg, cv.corpus.fingerprint, cv.vocab.sizes)
    model, history, _ = fit(cv.cfg, cv.vocab, train, val, cv.runs_dir / f"fold{f}", ident,
                            verbose=0, extra_callbacks=[_EpochBar(bar, f"fold {f + 1}")],
                            init=cv.init)
    names = [cv.corpus.pieces[i].name for i in split[2]]
    pieces = {n: {"network": r} for n, r in zip(names, heldout.piece_scores(
        model, test, heldout.Hidden.fitted(cv.cfg, train, cv.vocab.options.octaves)),
        strict=True)}
    row = {"fold": f + 1, "test_pieces": names, "epochs": len(history),
           "network": heldout.pooled([p["network"] for p in pieces.values()])}
    held = {"test": test, **{f"piece {n}": [seq] for n, seq in zip(names, test, strict=True)}}
    base = heldout.baseline_scores(train, val, held, cv.vocab.sizes)
    row.update({b: base[b]["test"] for b in BASELINES})
    row["ngram_order"] = base["ngram_order"]
    for n in names:  # the same baselines, piece by piece
        pieces[n].update({b: base[b][f"piece {n}"] for b in BASELINES})
    if cv.window_model:
        wcfg = window_config(cv.cfg, cv.window_stride)
        twin, _, _ = fit(wcfg, cv.vocab, train, val, cv.runs_dir / f"fold{f}-window",
                         {**ident, "config": asdict(wcfg)}, verbose=0,
                         extra_callbacks=[_EpochBar(bar, f"fold {f + 1} window model")])
        row["window"] = heldout.window_scores(twin, test, WINDOW)
    row["pieces"] = pieces
    if cv.export is not None:
        export_fold(cv, f, model, train, val, test, names, ident, len(history))
    row["seconds"] = round(time.time() - started, 1)
    keras.backend.clear_session()
    return row


def export_fold(cv: CrossVal, f: int, model, train, val, test, names: list[str], ident: dict,
                epochs: int) -> Path:
    """The fold's network as a model directory (``export/fold<k>``): its step model, and in
    corpus.npz its own training, validation and held-out pieces, so ``judge --fold-models``
    improvises with it against the Bach it never read (and fits the n-gram rival on what it
    did)."""
    from playbach import modeldir
    from trainer.dataset import key_table, note_range
    from trainer.model import state_offset
    from trainer.score import CORPUS_FILE, save_steps
    from trainer.train import export

    folder = cv.export / f"fold{f + 1}"
    staging = folder.with_name(f".{folder.name}-staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    meta: dict = {"format_version": modeldir.FORMAT_VERSION, "name": folder.name,
                  "build_id": uuid.uuid4().hex, "command": "trainer crossval --export",
                  "corpus": {"source": cv.corpus.source, "fingerprint": cv.corpus.fingerprint,
                             "split": {"train": len(train), "val": len(val), "test": len(test),
                                       "test_pieces": names}},
                  "encoding": asdict(cv.vocab.options), "config": asdict(cv.cfg),
                  "model": {"parameters": int(model.count_params()),
                            "vocab_sizes": dict(zip(HEADS, cv.vocab.sizes, strict=True))},
                  "training": {"epochs_run": epochs}, "fold": f + 1, "identity": ident,
                  "range": note_range(train)}
    if cv.cfg.key:
        meta["keys"] = key_table(train, state_offset(cv.cfg, "key"),
                                 cv.vocab.options.octaves).to_meta()
    save_steps(staging / CORPUS_FILE, train, val, test)
    export(model, replace(cv.cfg, eval_pieces=0), cv.vocab, meta, staging, test)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def summarise(rows: list[dict]) -> dict:
    """Mean and sd over folds of every model's metrics, and of the network's gaps to the best
    baseline per fold (accuracy points up, nats down; for each head its strongest rival)."""
    models = [m for m in ("network", *BASELINES, "window") if m in rows[0]]
    out: dict = {"folds": len(rows), "models": {}, "gaps": {}}
    for m in models:
        out["models"][m] = {h: {k: _stat([r[m][h][k] for r in rows]) for k in METRICS}
                            for h in HEADS}
    rivals = [m for m in models if m != "network"]
    for h in HEADS:
        acc = [r["network"][h]["accuracy"] - max(r[b][h]["accuracy"] for b in rivals)
               for r in rows]
        nats = [min(r[b][h]["nats"] for b in rivals) - r["network"][h]["nats"] for r in rows]
        out["gaps"][h] = {"accuracy": _stat(acc), "nats": _stat(nats),
                          "clear": bool(_clear(acc) and _clear(nats))}
    return out


def _stat(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, float)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def _clear(values: list[float]) -> bool:
    s = _stat(values)
    return s["mean"] > 2 * s["sd"]


def run_identity(cv: CrossVal, seqs: list[np.ndarray]) -> dict:
    """What makes two runs the same run (``--resume`` keeps the folds of one that matches)."""
    return {"corpus": {"source": cv.corpus.source, "pieces": len(seqs),
                       "steps": int(sum(len(s) - 1 for s in seqs)),
                       "fingerprint": cv.corpus.fingerprint},
            "config": asdict(cv.cfg), "window_stride": cv.window_stride if cv.window_model
            else None, "stratify": cv.stratify, "k": cv.folds}


def earlier_folds(cv: CrossVal, ident: dict) -> dict[int, dict]:
    """The folds an earlier run of the same identity wrote to ``cv.out``, by fold number."""
    if not cv.resume or cv.out is None or not cv.out.is_file():
        return {}
    try:
        before = json.loads(cv.out.read_text())
    except ValueError as exc:
        raise UserError(f"--resume: {cv.out} is not a crossval result: {exc}") from None
    if "config" in before:
        before["config"] = with_defaults(before["config"])
    changed = sorted(k for k in ident if before.get(k) != ident[k])
    if changed:
        raise UserError(f"--resume: the run in {cv.out} differs in {', '.join(changed)}")
    return {row["fold"]: row for row in before.get("folds", [])}


def crossval(cv: CrossVal) -> dict:
    """Every fold (those an earlier run of the same identity finished are kept with
    ``resume``), the result written to ``cv.out`` after each: hours of folds are not lost to
    one that fails."""
    from tqdm import tqdm

    seqs = encode(cv.corpus.pieces, cv.vocab)
    splits = stratified_splits(seqs, cv.folds, cv.cfg, cv.stratify)
    ident = run_identity(cv, seqs)
    done = earlier_folds(cv, ident)
    todo = [f for f in range(cv.folds) if not cv.only or f + 1 in cv.only or f + 1 in done]
    rows = []
    with tqdm(total=len(todo), desc="folds", unit="fold", disable=not cv.progress) as bar:
        for f in todo:
            rows.append(done.get(f + 1) or run_fold(cv, f, splits[f], seqs, bar))
            bar.update()
            if cv.out is not None and len(rows) < len(todo):
                # the folds so far summarised too (from two on): hours in, where it stands
                sofar = {"summary": summarise(rows)} if len(rows) > 1 else {}
                write({**ident, "partial": True, **sofar, "folds": rows}, cv.out)
    partial = {"partial": True} if len(rows) < cv.folds else {}
    result = {**ident, **partial, "summary": summarise(rows), "folds": rows}
    if cv.out is not None:
        write(result, cv.out)
    return result


def report(result: dict) -> str:
    s = result["summary"]
    strata = "" if result.get("stratify", "none") == "none" else \
        f", stratified by {result['stratify']}"
    if result.get("partial"):
        strata += (f"; only fold {', '.join(str(r['fold']) for r in result['folds'])} of "
                   f"{result['k']}: not a cross-validation yet")
    lines = [f"{result['k']}-fold cross-validation by whole pieces{strata} on "
             f"{result['corpus']['source']}"
             f" ({result['corpus']['pieces']} pieces, {result['corpus']['steps']} steps, every "
             "step scored): mean ± sd over folds",
             f"  {'head':<9} {'model':<8} {'accuracy':>15} {'nats/step':>15} {'bits/step':>15}"]
    for h in HEADS:
        for m, stats in s["models"].items():
            cells = " ".join(f"{stats[h][k]['mean']:>8.3f} ±{stats[h][k]['sd']:.3f}"
                             for k in METRICS)
            lines.append(f"  {h:<9} {m:<8} {cells}")
        g = s["gaps"][h]
        lines.append(f"  {h:<9} {'gap':<8} {g['accuracy']['mean'] * 100:>+7.1f} "
                     f"±{g['accuracy']['sd'] * 100:.1f} pt {g['nats']['mean']:>+8.3f} "
                     f"±{g['nats']['sd']:.3f}  {'clear' if g['clear'] else 'NOT clear'} "
                     "(network minus the best rival; clear = both gaps above 2 sd)")
    return "\n".join(lines)


def write(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
