"""Loaded step models, shared by every channel that plays them (a step is synchronous and the
state lives with the channel, so one interpreter serves many channels)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from playbach.modeldir import ModelError, model_dir
from playbach.stepmodel import StepModel


class ModelCache:
    def __init__(self, models_dir: Path, size: int) -> None:
        self.models_dir, self.size = Path(models_dir), size
        self._loaded: OrderedDict[str, tuple[float, StepModel]] = OrderedDict()

    def get(self, name: str) -> StepModel:
        """The model, reloaded when its directory was republished. Raises ModelError."""
        path = model_dir(self.models_dir, name)
        try:
            stamp = (path / "meta.json").stat().st_mtime_ns
        except FileNotFoundError:
            raise ModelError(f"no model {name!r} in {self.models_dir}") from None
        cached = self._loaded.get(name)
        if cached and cached[0] == stamp:
            self._loaded.move_to_end(name)
            return cached[1]
        model = StepModel(path)
        self._loaded[name] = (stamp, model)
        while len(self._loaded) > self.size:
            self._loaded.popitem(last=False)
        return model
