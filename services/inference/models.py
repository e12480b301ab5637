"""Loaded step models, shared by every channel that plays them (a step is synchronous and the
state lives with the channel, so one interpreter serves many channels).

A model is probed when it is loaded (a few steps must give finite logits); a model that fails
is remembered as failed until its directory is republished, so a broken model costs one probe,
not one per tick. A republished model (the trainer swaps the folder by one rename) is a new
folder: ``get`` loads it the first time it is asked after the swap."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from playbach.modeldir import ModelError, model_dir
from playbach.stepmodel import StepModel


class ModelCache:
    def __init__(self, models_dir: Path, size: int) -> None:
        self.models_dir, self.size = Path(models_dir), size
        self._loaded: OrderedDict[str, tuple[tuple[int, int], StepModel]] = OrderedDict()
        self._failed: dict[str, tuple[tuple[int, int], str]] = {}

    def stamp(self, name: str) -> tuple[int, int] | None:
        """Which publication of the model is on disk: its folder's inode and meta.json's
        time (a republish swaps the folder); None if it is gone."""
        path = model_dir(self.models_dir, name)
        try:
            return path.stat().st_ino, (path / "meta.json").stat().st_mtime_ns
        except OSError:
            return None

    def get(self, name: str) -> StepModel:
        """The model, reloaded when its directory was republished. Raises ModelError."""
        path = model_dir(self.models_dir, name)
        stamp = self.stamp(name)
        if stamp is None:
            raise ModelError(f"no model {name!r} in {self.models_dir}")
        cached = self._loaded.get(name)
        if cached and cached[0] == stamp:
            self._loaded.move_to_end(name)
            return cached[1]
        failed = self._failed.get(name)
        if failed and failed[0] == stamp:
            raise ModelError(failed[1])
        try:
            model = StepModel(path)
            model.probe()
        except ModelError as exc:
            self._failed[name] = (stamp, str(exc))
            raise
        self._failed.pop(name, None)
        self._loaded[name] = (stamp, model)
        while len(self._loaded) > self.size:
            self._loaded.popitem(last=False)
        return model

    def __len__(self) -> int:
        return len(self._loaded)

    def names(self) -> list[str]:
        return list(self._loaded)

    def forget(self, name: str, reason: str) -> None:
        """A model that failed while playing: unload it, refuse it until it is republished."""
        cached = self._loaded.pop(name, None)
        if cached:
            self._failed[name] = (cached[0], reason)
