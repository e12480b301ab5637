"""One training job, in its own process (started by :mod:`trainer.worker`): corpus -> the
same ``train`` as the CLI -> an atomically published model. It reports over a pipe and never
touches Redis; the worker passes its reports on. TensorFlow's memory goes with the process."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from playbach.modeldir import ModelError
from playbach.training import CORPORA, TrainProgress
from playbach.vocab import EncodingOptions, VocabError
from trainer.config import UserError, make_config

log = logging.getLogger("trainer")


class Cancelled(Exception):
    """The admin cancelled the job."""


@dataclass(frozen=True)
class Spec:
    id: str
    name: str
    preset: str
    corpus: str | None  # a music21 corpus, or None: the MIDI files in ``folder``
    folder: Path


class Reporter:
    """Progress to the worker; the cancel flag from it."""

    def __init__(self, conn: Connection, cancel, started: float) -> None:
        self.conn, self.cancel, self.started = conn, cancel, started

    def send(self, **fields: Any) -> None:
        progress = TrainProgress(seconds=round(time.time() - self.started, 1), **fields)
        self.conn.send({"progress": progress.model_dump_json()})

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled


def _die_with_parent() -> None:
    """A worker killed with -9 cannot stop us: we stop when it is gone (our parent changes)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="orphan-watch").start()


def progress_callback(report: Reporter, epochs: int):
    import keras

    class Progress(keras.callbacks.Callback):
        """Each epoch's numbers; the cancel flag looked at after every batch."""

        def on_train_begin(self, logs=None) -> None:
            self.begun = time.time()

        def on_train_batch_end(self, batch, logs=None) -> None:
            report.check()

        def on_epoch_end(self, epoch, logs=None) -> None:
            logs = logs or {}
            per_epoch = (time.time() - self.begun) / (epoch + 1)
            key = "pitch_sparse_categorical_accuracy"
            report.send(kind="epoch", epoch=epoch + 1, epochs=epochs, loss=logs.get("loss"),
                        val_loss=logs.get("val_loss"), accuracy=logs.get(key),
                        val_accuracy=logs.get("val_" + key),
                        eta_s=round(per_epoch * (epochs - epoch - 1), 1))

        def on_train_end(self, logs=None) -> None:
            report.send(kind="phase", message="scoring on held-out pieces against the "
                                              "n-gram, exporting, publishing")

    return Progress()


def run(spec: Spec, report: Reporter) -> dict[str, Any]:
    from playbach.settings import load
    from trainer.corpus import check_size, corpus_paths, load_corpus, midi_paths
    from trainer.settings import TrainerSettings

    settings = load(TrainerSettings, "trainer")
    cfg = make_config(spec.preset, [])
    options = EncodingOptions()
    if spec.corpus:
        source, paths = CORPORA[spec.corpus], corpus_paths(spec.corpus)
    else:
        paths = midi_paths(spec.folder)
        source = f"{len(paths)} uploaded MIDI files"
    report.send(kind="phase", message=f"parsing {len(paths)} files")
    corpus = load_corpus(source, paths, options, settings.cache_dir, progress=False,
                         limits=settings.limits(),
                         on_file=lambda done, total: report.send(kind="parse", done=done,
                                                                 total=total))
    report.check()
    for skip in corpus.skipped:
        report.send(kind="phase", message=f"skipped {skip['file']}: {skip['reason']}")
    check_size(corpus, cfg.seq_len)
    report.send(kind="phase", message=f"training on {len(corpus.pieces)} pieces "
                                      f"({corpus.events:,} events), at most {cfg.epochs} epochs")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer.train import Job, train

    target = train(Job(name=spec.name, preset=spec.preset, cfg=cfg, options=options,
                       corpus=corpus, models_dir=settings.models_dir,
                       runs_dir=settings.runs_dir / "jobs", progress=False,
                       command=f"python -m trainer worker (job {spec.id})",
                       callbacks=(progress_callback(report, cfg.epochs),)))
    return {"state": "done", "model": target.name, "skipped": corpus.skipped}


def main(spec: Spec, conn: Connection, cancel) -> None:
    """The process's entry point: one result message, whatever happens."""
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s trainer-job %(message)s")
    report = Reporter(conn, cancel, time.time())
    try:
        result = run(spec, report)
    except Cancelled:
        result = {"state": "cancelled", "reason": "cancelled by the admin"}
    except (UserError, ModelError, VocabError, ValueError) as exc:
        result = {"state": "failed", "reason": str(exc)}
    except Exception as exc:  # anything else: one line for the admin, the trace in the log
        log.exception("job %s failed", spec.id)
        result = {"state": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    conn.send({"result": result})
    conn.close()
