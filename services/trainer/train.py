"""`train`: corpus -> tokens -> LSTM -> evaluated, exported, published model directory."""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from playbach import modeldir
from playbach.modeldir import ModelError
from playbach.stepmodel import HEADS
from playbach.vocab import EncodingOptions, Vocabulary
from trainer import calibrate, heldout, improvise
from trainer.config import TrainConfig
from trainer.corpus import Corpus, check_size
from trainer.dataset import (
    context,
    duration_ticks,
    encode,
    key_table,
    note_range,
    piece_key,
    split_pieces,
)
from trainer.export import check_parity, reference, to_tflite
from trainer.fit import fit, identity, plot
from trainer.model import state_offset, state_size
from trainer.score import CORPUS_FILE, save_steps

log = logging.getLogger("trainer")
PARITY_STEPS = 300
ORIGINAL_WINDOW = 40  # the original project's window, for its accuracy protocol


@dataclass
class Job:
    name: str
    preset: str
    cfg: TrainConfig
    options: EncodingOptions
    corpus: Corpus  # parsed and checked by the caller, before TensorFlow loaded
    models_dir: Path
    runs_dir: Path
    command: str
    resume: bool = False
    progress: bool = True
    callbacks: tuple = ()  # more Keras callbacks (the worker's progress reports)


def train(job: Job) -> Path:
    started = time.time()
    cfg, corpus = job.cfg, job.corpus
    check_size(corpus, cfg.seq_len)  # the CLI checked already; other callers may not have
    train_p, val_p, test_p = split_pieces(corpus.pieces, cfg)
    vocab = Vocabulary(job.options)
    tr, va, te = (encode(ps, vocab) for ps in (train_p, val_p, test_p))
    log.info("%d pieces (%d train, %d val, %d test), %d events, vocab %s",
             len(corpus.pieces), len(tr), len(va), len(te), corpus.events, vocab.sizes)

    run_dir = job.runs_dir / job.name
    ident = identity(cfg, corpus.fingerprint, vocab.sizes)
    model, history, _ = fit(cfg, vocab, tr, va, run_dir, ident, job.resume,
                            init=cfg.init_weights(job.models_dir), extra_callbacks=job.callbacks)
    train_seconds = time.time() - started
    keys = key_table(tr, state_offset(cfg, "key"), vocab.options.octaves) if cfg.key else None
    hidden = heldout.Hidden.of(cfg, keys)
    metrics = {
        "network": {"val": heldout.network_scores(model, va, hidden),
                    "test": heldout.network_scores(model, te, hidden)},
        **heldout.baseline_scores(tr, va, {"val": va, "test": te}, vocab.sizes),
    }
    if cfg.original_protocol:
        metrics["original_protocol"] = original_protocol(cfg, vocab, tr + va, run_dir, ident)

    staging = modeldir.staging_dir(job.models_dir, job.name)
    try:
        meta = build_meta(job, corpus, (train_p, val_p, test_p), vocab, model, history, metrics,
                          train_seconds)
        if keys is not None:
            meta["keys"] = keys.to_meta()
        meta["range"] = note_range(tr)
        save_steps(staging / CORPUS_FILE, tr, va, te)
        export(model, cfg, vocab, meta, staging, te)
        plot(history, staging / "training.png", f"{job.name}: {corpus.source}",
             metrics["ngram"]["val"]["pitch"]["accuracy"],
             f"{metrics['ngram_order']['pitch']}-gram")
        target = modeldir.publish(staging, modeldir.model_dir(job.models_dir, job.name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when published
    print_report(meta)
    return target


def original_protocol(cfg: TrainConfig, vocab: Vocabulary, seqs: list[np.ndarray],
                      run_dir: Path, ident: dict) -> dict:
    """The same network trained on a random split of overlapping windows, as the original did.
    Its validation windows share notes with training windows, so its accuracy is optimistic."""
    twin_cfg = replace(cfg, split="windows", objective="last", seq_len=ORIGINAL_WINDOW,
                       stride=1, original_protocol=False)
    twin, history, (vx, vy, vw) = fit(twin_cfg, vocab, seqs, [], run_dir / "original",
                                      {**ident, "config": asdict(twin_cfg)})
    best = min(history, key=lambda h: h["val_loss"])
    return {
        "split": "random windows (train and validation overlap)",
        "val_accuracy_all_steps": best["val_pitch_sparse_categorical_accuracy"],
        "val_window_end_accuracy": heldout.end_accuracy(twin, vx, vy, vw),
        "original_reported": 0.74,
    }


def build_meta(job: Job, corpus: Corpus, splits, vocab: Vocabulary, model, history, metrics,
               seconds: float) -> dict:
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    train_p, val_p, test_p = splits
    return {
        "format_version": modeldir.FORMAT_VERSION,
        "name": job.name,
        "build_id": uuid.uuid4().hex,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": job.command,
        "preset": job.preset,
        "corpus": {
            "source": corpus.source, "files": corpus.files, "pieces": len(corpus.pieces),
            "events": corpus.events, "fingerprint": corpus.fingerprint,
            "skipped_count": len(corpus.skipped), "skipped": corpus.skipped,
            "split": {"train": len(train_p), "val": len(val_p), "test": len(test_p),
                      "test_pieces": [p.name for p in test_p]},
        },
        "encoding": asdict(job.options),
        "config": asdict(job.cfg),
        "model": {"parameters": int(model.count_params()),
                  "vocab_sizes": dict(zip(HEADS, vocab.sizes, strict=True))},
        "training": {"epochs_run": len(history), "best_epoch": best + 1,
                     "best_val_loss": history[best]["val_loss"], "seconds": round(seconds, 1)},
        "metrics": metrics,
    }


def export(model, cfg: TrainConfig, vocab: Vocabulary, meta: dict, folder: Path,
           test: list[np.ndarray]) -> None:
    """Write every file of the model directory into ``folder`` and check the step model."""
    plain, int8 = to_tflite(model, cfg, vocab)
    (folder / "step.tflite").write_bytes(plain)
    (folder / "step_int8.tflite").write_bytes(int8)
    (folder / "vocab.json").write_text(vocab.to_json())
    inference_copy(model).save(folder / "model.keras")
    modeldir.write_json(folder / "meta.json", meta)
    # one stream, its context counted through it as the step model counts it
    tokens = context(np.concatenate([t[:, :len(HEADS)] for t in test])[:PARITY_STEPS],
                     duration_ticks(vocab), piece_key(test[0]))
    ref = reference(model, tokens, cfg.joins)
    meta["export"] = {
        "float": check_parity(model, folder, tokens, ref=ref),
        "int8": check_parity(model, folder, tokens, quantized=True, ref=ref),
        "bytes": {f.name: f.stat().st_size for f in sorted(folder.iterdir())},
    }
    meta["model"]["state_size"] = state_size(cfg)
    if cfg.calibrate_pieces:  # before evaluate, which then draws as a channel will
        modeldir.write_json(folder / "meta.json", meta)
        meta["sampling"] = calibrate.fit(folder, cfg.calibrate_pieces)
        modeldir.write_json(folder / "meta.json", meta)
    try:
        if cfg.eval_pieces:
            meta["evaluation"] = improvise.evaluate(folder, cfg.eval_pieces,
                                                    cfg.eval_notes or None)
    except ModelError as exc:  # a corpus too small for a band: say so, the model still ships
        meta["evaluation"] = {"error": str(exc)}
    modeldir.write_json(folder / "meta.json", meta)


def inference_copy(model):
    """The network without its optimizer: Adam's two moment buffers would triple the file."""
    import keras

    bare = keras.Model.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    return bare


def print_report(meta: dict) -> None:
    m = meta["metrics"]
    net = m["network"]["test"]
    base = {b: m[b]["test"] for b in ("ngram", "unigram", "repeat")}
    lines = [
        f"\nmodel {meta['name']}: {meta['model']['parameters']:,} parameters, "
        f"{meta['training']['epochs_run']} epochs ({meta['training']['seconds']:.0f} s), "
        f"corpus {meta['corpus']['source']}: {meta['corpus']['pieces']} pieces, "
        f"{meta['corpus']['skipped_count']} skipped",
        f"held-out test pieces ({meta['corpus']['split']['test']}), every step scored "
        "(accuracy / nats per step):",
        f"  {'head':<9} {'network':>15} {'n-gram':>15} {'unigram':>15} {'repeat':>15}"
        f" {'steps':>7}",
    ]
    for head in ("pitch", "duration", "velocity"):
        cells = [net[head], *(base[b][head] for b in base)]
        lines.append(f"  {head:<9} " + " ".join(
            f"{c['accuracy']:>8.1%} {c['nats']:>6.3f}" for c in cells)
            + f" {net[head]['tokens']:>7}")
    lines.append("  n-gram orders chosen on the validation pieces: " + ", ".join(
        f"{h} {o}" for h, o in m["ngram_order"].items()))
    if "keys" in meta:
        lines.append(f"  the network is never told a piece's key: it weighs all "
                     f"{len(meta['keys']['hypotheses'])} keys it knows by the notes so far")
    if "original_protocol" in m:
        o = m["original_protocol"]
        lines.append(f"  original protocol (random window split, leaky): pitch accuracy "
                     f"{o['val_window_end_accuracy']:.1%} at window ends, "
                     f"{o['val_accuracy_all_steps']:.1%} over all steps (original reported 74%)")
    ex = meta["export"]
    lines.append(f"  step.tflite vs Keras over {ex['float']['steps']} steps: max logit diff "
                 f"{ex['float']['max_logit_diff']:.2e}; int8: {ex['int8']['max_logit_diff']:.2e}"
                 f" (top-1 agreement {ex['int8']['pitch_top1_agreement']:.1%})")
    print("\n".join(lines))
