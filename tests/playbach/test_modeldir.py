"""The model directory contract: names, atomic publishing, and refusing broken models."""

import json
import shutil
import threading

import pytest

from playbach import modeldir
from playbach.modeldir import ModelError, publish, staging_dir
from playbach.schemas import DEFAULT_MODEL
from playbach.stepmodel import StepModel
from tests.conftest import SHIPPED


def make_model(folder, marker: str) -> None:
    for f in modeldir.REQUIRED:
        (folder / f).write_text(marker)


def test_names():
    assert modeldir.check_name("bach-2.small_v1") == "bach-2.small_v1"
    for bad in ("", "../x", "A", ".hidden", "x" * 65, "a/b"):
        with pytest.raises(ModelError):
            modeldir.check_name(bad)


def test_publish_is_atomic_for_readers(tmp_path):
    target = tmp_path / "m"
    first = staging_dir(tmp_path, "m")
    make_model(first, "one")
    publish(first, target)
    assert (target / "meta.json").read_text() == "one" and not first.exists()
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add(tuple((target / f).read_text() for f in modeldir.REQUIRED))
            except FileNotFoundError:
                seen.add("missing")

    t = threading.Thread(target=reader)
    t.start()
    for i in range(200):
        stage = staging_dir(tmp_path, "m")
        make_model(stage, f"v{i}")
        publish(stage, target)
    stop.set()
    t.join()
    assert "missing" not in seen  # the folder is exchanged, never absent
    assert (target / "meta.json").read_text() == "v199"
    assert modeldir.list_models(tmp_path) == ["m"]  # no staging or old folders left behind


def test_publish_refuses_an_incomplete_model(tmp_path):
    stage = staging_dir(tmp_path, "m")
    (stage / "vocab.json").write_text("{}")
    with pytest.raises(ModelError, match=r"missing step\.tflite, meta\.json"):
        publish(stage, tmp_path / "m")


@pytest.fixture
def shipped_copy(tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(SHIPPED / DEFAULT_MODEL, target)
    return target


def test_broken_models_are_refused_with_a_reason(shipped_copy):
    StepModel(shipped_copy)  # intact: loads
    (shipped_copy / "step.tflite").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="not a usable TFLite model"):
        StepModel(shipped_copy)


def test_vocab_that_does_not_match_the_network_is_refused(shipped_copy):
    vocab = json.loads((shipped_copy / "vocab.json").read_text())
    vocab["duration"].append("8")  # a valid table, one longer than the network's head
    (shipped_copy / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ModelError, match=r"do not match vocab\.json"):
        StepModel(shipped_copy)
    vocab["duration"].pop()
    vocab["pitch"] = vocab["pitch"][:-1]  # the note table is fixed: refused as it is read
    (shipped_copy / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ModelError, match="fixed note table"):
        StepModel(shipped_copy)


def test_unknown_format_is_refused(shipped_copy):
    meta = json.loads((shipped_copy / "meta.json").read_text())
    meta["format_version"] = 99
    (shipped_copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="model format 99"):
        StepModel(shipped_copy)
    (shipped_copy / "meta.json").unlink()
    with pytest.raises(ModelError, match=r"no meta\.json"):
        StepModel(shipped_copy)
