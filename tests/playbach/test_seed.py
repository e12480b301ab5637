"""The init step that puts the shipped models onto an empty models volume."""

from __future__ import annotations

import json
import shutil

from playbach.modeldir import list_models
from playbach.seed import main, seed
from tests.conftest import SHIPPED


def test_an_empty_volume_gets_every_shipped_model_and_a_retrained_one_is_kept(tmp_path,
                                                                               capsys):
    volume = tmp_path / "models"
    assert seed(SHIPPED, volume) == list_models(SHIPPED) and len(list_models(SHIPPED)) >= 2
    assert list_models(volume) == list_models(SHIPPED)
    assert not [p for p in volume.iterdir() if p.name.startswith(".")]  # no staging left
    retrained = volume / list_models(SHIPPED)[0] / "meta.json"
    retrained.write_text(json.dumps({**json.loads(retrained.read_text()), "mine": True}))
    shutil.rmtree(volume / list_models(SHIPPED)[1])
    assert main(["--shipped", str(SHIPPED), "--models-dir", str(volume)]) == 0
    assert json.loads(retrained.read_text())["mine"]  # never replaced
    out = capsys.readouterr().out
    assert f"copied {list_models(SHIPPED)[1]}; kept {list_models(SHIPPED)[0]}" in out


def test_bad_arguments_are_one_line(tmp_path, capsys):
    assert main(["--shipped", str(tmp_path), "--models-dir", str(tmp_path / "m")]) == 2
    assert main(["--shipped", str(SHIPPED), "--models-dir", str(tmp_path), "--owner", "x"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"seed: no models in {tmp_path}",
                   "seed: --owner 'x': expected UID or UID:GID, as numbers"]
