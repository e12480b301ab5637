"""The model directory contract: ``MODELS_DIR/<name>/`` and how it is published.

Files: ``step.tflite`` (required), ``vocab.json`` (required), ``meta.json`` (required),
optionally ``step_int8.tflite``, ``model.keras`` and ``training.png``. A directory is published
whole by one atomic rename, so a service never sees half of one."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from playbach.schemas import MODEL_PATTERN
from playbach.vocab import VocabError, Vocabulary

FORMAT_VERSION = 2  # 2: the note-level vocabulary (vocab.json format 2)
REQUIRED = ("step.tflite", "vocab.json", "meta.json")
_NAME = re.compile(MODEL_PATTERN)


class ModelError(Exception):
    """A model that cannot be used: missing, malformed or incompatible. The message says why."""


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ModelError(
            f"model name {name!r} must be 1-64 of a-z 0-9 . _ - and start with a letter or digit"
        )
    return name


def model_dir(models_dir: Path, name: str) -> Path:
    return Path(models_dir) / check_name(name)


def list_models(models_dir: Path) -> list[str]:
    """Names of the complete model directories (hidden staging folders are skipped)."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir()
        if _NAME.match(p.name) and all((p / f).is_file() for f in REQUIRED)
    )


def read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((Path(path) / "meta.json").read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} has no meta.json") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}/meta.json is unreadable: {exc}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{path}: model format {meta.get('format_version')!r}, "
            f"this build reads {FORMAT_VERSION}"
        )
    return meta


def read_vocab(path: Path) -> Vocabulary:
    try:
        return Vocabulary.from_json((Path(path) / "vocab.json").read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} has no vocab.json") from None
    except VocabError as exc:
        raise ModelError(f"{path}/vocab.json: {exc}") from None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON file by rename, so readers see the old or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def staging_prefix(name: str) -> str:
    """How the staging folders of model ``name`` begin: hidden (never listed as a model),
    and ended by a character no name has (so model "a" never claims model "a-b"'s)."""
    return f".staging-{check_name(name)}@"


def staging_dir(models_dir: Path, name: str) -> Path:
    """An empty folder beside the target, on the same file system, to build a model in."""
    path = Path(models_dir) / f"{staging_prefix(name)}{os.getpid()}-{time.time_ns()}"
    path.mkdir(parents=True)
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def publish(staging: Path, target: Path) -> Path:
    """Put a finished staging folder at ``target``: readers see the old model or the new one."""
    missing = [f for f in REQUIRED if not (staging / f).is_file()]
    if missing:
        raise ModelError(f"refusing to publish {target.name}: missing {', '.join(missing)}")
    if not target.exists():
        os.rename(staging, target)
        return target
    if not _exchange(staging, target):
        # Fallback: two renames; a reader can miss the folder for a moment, never see a mix.
        old = target.with_name(f".old-{target.name}-{time.time_ns()}")
        os.rename(target, old)
        os.rename(staging, target)
        staging = old
    shutil.rmtree(staging, ignore_errors=True)
    return target
