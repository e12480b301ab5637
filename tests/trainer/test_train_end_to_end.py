"""The trainer on real data, end to end: corpus -> tiny model -> LiteRT."""

import json
from pathlib import Path

import numpy as np
import pytest

from playbach.modeldir import list_models
from playbach.stepmodel import Improviser, StepModel
from tests.conftest import run_cli


def test_chorales_model_directory(chorale_model):
    files = {p.name for p in chorale_model.iterdir()}
    assert files == {"step.tflite", "step_int8.tflite", "vocab.json", "meta.json", "model.keras",
                     "training.png", "corpus.npz"}
    assert chorale_model.name in list_models(chorale_model.parent)
    meta = json.loads((chorale_model / "meta.json").read_text())
    assert meta["command"].startswith("python -m trainer train --preset tiny")
    assert meta["corpus"]["pieces"] == 12 and meta["corpus"]["skipped_count"] == 0
    assert len(meta["corpus"]["fingerprint"]) == 16
    assert meta["model"]["parameters"] > 1000
    for split in ("val", "test"):
        for head in ("pitch", "duration", "velocity"):
            net = meta["metrics"]["network"][split][head]
            ngram = meta["metrics"]["ngram"][split][head]
            assert 0 <= net["accuracy"] <= 1 and net["perplexity"] >= 1 and net["tokens"] > 0
            assert 0 <= ngram["accuracy"] <= 1 and ngram["perplexity"] >= 1
    assert meta["metrics"]["original_protocol"]["original_reported"] == 0.74
    # the exported step model (context, pointer and all) is the Keras model, one step at a time
    assert meta["export"]["float"]["steps"] >= 100
    assert meta["export"]["float"]["max_logit_diff"] < 1e-4
    assert meta["evaluation"]["pieces"] == 2 and "statistics" in meta["evaluation"]
    low, high = meta["range"]  # the training pieces' notes, which improvising keeps to
    assert 30 <= low < 60 < high <= 90


def test_litert_loads_and_improvises(chorale_model):
    model = StepModel(chorale_model)
    assert model.state_size == json.loads((chorale_model / "meta.json").read_text())[
        "model"]["state_size"]
    events = list(Improviser(model, temperature=1.0, seed=3).notes(20))
    assert sum(not e.is_rest for e in events) == 20
    again = list(Improviser(StepModel(chorale_model, quantized=True), 1.0, seed=3).notes(5))
    assert len(again) >= 5


def test_cello_suites_with_a_corrupt_file(cello_run, dirs):
    assert "skipped broken.mid:" in cello_run.stderr
    meta = json.loads((Path(dirs["MODELS_DIR"]) / "tiny-cello" / "meta.json").read_text())
    assert meta["corpus"]["files"] == 6 and meta["corpus"]["pieces"] == 5
    assert meta["corpus"]["skipped_count"] == 1
    assert meta["corpus"]["skipped"][0]["file"] == "broken.mid"
    assert meta["corpus"]["skipped"][0]["reason"]
    assert meta["metrics"]["ngram_order"]["pitch"] in range(1, 7)
    assert meta["config"]["key_profile"] and meta["export"]["float"]["max_logit_diff"] < 1e-4


def test_resume_continues_the_same_run(cello_run, dirs, cello_dir):
    res = run_cli("train", "--preset", "tiny", "--name", "tiny-cello", "--midi-dir",
                  str(cello_dir), "--key-profile=true", "--resume", "--epochs=5", env=dirs)
    # a changed config is refused: the run was made with epochs=3
    assert res.returncode == 2 and "differs in config" in res.stderr
    res = run_cli("train", "--preset", "tiny", "--name", "tiny-cello", "--midi-dir",
                  str(cello_dir), "--key-profile=true", "--resume", env=dirs)
    assert res.returncode == 0, res.stderr[-2000:]
    meta = json.loads((Path(dirs["MODELS_DIR"]) / "tiny-cello" / "meta.json").read_text())
    assert meta["training"]["epochs_run"] == 3
    assert meta["command"].endswith("--resume")


def test_second_run_uses_the_parse_cache(cello_run, dirs):
    cached = list((Path(dirs["CACHE_DIR"]) / "events").glob("*.json"))
    assert len(cached) >= 6  # five pieces and the corrupt file's reason
    assert any("error" in json.loads(p.read_text()) for p in cached)


def test_sampling_respects_temperature(chorale_model):
    model = StepModel(chorale_model)
    cold = [e.pitch for e in Improviser(model, 0.1, seed=1).notes(30)]
    hot = [e.pitch for e in Improviser(model, 3.0, seed=1).notes(30)]
    assert len(set(cold)) < len(set(hot))
    assert np.isfinite(model.step((0, 0, 0), model.initial_state())[0][0]).all()




def test_score_counts_every_step_against_the_models_own_ngram_read_only(cello_run, dirs,
                                                                        cello_dir):
    folder = Path(dirs["MODELS_DIR"]) / "tiny-cello"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    res = run_cli("score", "--model", "tiny-cello", "--midi-dir", str(cello_dir), "--json",
                  env=dirs)
    assert res.returncode == 0, res.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # read-only
    result = json.loads(res.stdout)
    assert result["pieces"] == 5 and "skipped broken.mid" in res.stderr
    steps = result["steps"]
    for model in ("network", "ngram", "unigram", "repeat"):
        for head in ("pitch", "duration", "velocity"):
            assert result[model][head]["tokens"] == steps  # every step, no <unk> dropped
    # the same pieces through Keras at once give the same numbers as LiteRT step by step
    meta = json.loads((folder / "meta.json").read_text())
    test_piece = meta["corpus"]["split"]["test_pieces"][0] + ".mid"
    one = cello_dir.parent / "one"
    one.mkdir(exist_ok=True)
    (one / test_piece).write_bytes((cello_dir / test_piece).read_bytes())
    res = run_cli("score", "--model", "tiny-cello", "--midi-dir", str(one), "--json", env=dirs)
    net = json.loads(res.stdout)["network"]["pitch"]
    assert net["nats"] == pytest.approx(meta["metrics"]["network"]["test"]["pitch"]["nats"],
                                        rel=1e-3)


def test_crossval_reports_every_fold_against_every_baseline(dirs, cello_dir, tmp_path):
    out = tmp_path / "cv.json"
    first = run_cli("crossval", "--preset", "tiny", "--midi-dir", str(cello_dir), "--folds", "2",
                    "--window-model", "--window-stride", "4", "--epochs=1", "--out", str(out),
                    "--only", "2", env=dirs)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "only fold 2 of 2: not a cross-validation yet" in first.stdout
    partial = json.loads(out.read_text())
    assert partial["partial"] and [f["fold"] for f in partial["folds"]] == [2]
    res = run_cli("crossval", "--preset", "tiny", "--midi-dir", str(cello_dir), "--folds", "2",
                  "--window-model", "--window-stride", "4", "--epochs=1", "--out", str(out),
                  "--resume", env=dirs)  # fold 1 now, fold 2 kept
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2-fold cross-validation by whole pieces" in res.stdout
    result = json.loads(out.read_text())
    assert "partial" not in result and result["folds"][1] == partial["folds"][0]
    tested = [name for fold in result["folds"] for name in fold["test_pieces"]]
    assert sorted(tested) == sorted(p.stem for p in cello_dir.glob("cs*.mid"))
    models = result["summary"]["models"]
    assert set(models) == {"network", "ngram", "unigram", "repeat", "window"}
    for fold in result["folds"]:  # the same steps for every model
        assert len({fold[m]["pitch"]["tokens"] for m in models}) == 1
    assert set(result["summary"]["gaps"]["pitch"]) == {"accuracy", "nats", "clear"}
    # --resume keeps the folds the file holds (here all: nothing is trained again), and
    # refuses a file made with another config
    again = run_cli("crossval", "--preset", "tiny", "--midi-dir", str(cello_dir), "--folds",
                    "2", "--window-model", "--window-stride", "4", "--epochs=1", "--out",
                    str(out), "--resume", env=dirs)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(out.read_text())["folds"] == result["folds"]
    other = run_cli("crossval", "--preset", "tiny", "--midi-dir", str(cello_dir), "--folds",
                    "2", "--window-model", "--window-stride", "4", "--epochs=2", "--out",
                    str(out), "--resume", env=dirs)
    assert other.returncode == 2 and "differs in config" in other.stderr, other.stderr


def test_training_can_start_from_a_published_model(chorale_model, dirs, cello_dir):
    import keras

    import trainer.model  # noqa: F401  (registers the custom layers for loading)

    # a learning rate of 0: what is published is exactly what training started from
    res = run_cli("train", "--preset", "tiny", "--name", "tiny-init", "--midi-dir",
                  str(cello_dir), f"--init={chorale_model.name}", "--epochs=1",
                  "--learning-rate=0", env=dirs)
    assert res.returncode == 0, res.stderr[-2000:]
    folder = Path(dirs["MODELS_DIR"]) / "tiny-init"
    assert json.loads((folder / "meta.json").read_text())["config"]["init"] == chorale_model.name
    weights = [keras.models.load_model(m / "model.keras", compile=False).get_weights()
               for m in (chorale_model, folder)]
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
    res = run_cli("train", "--preset", "tiny", "--name", "x", "--midi-dir", str(cello_dir),
                  "--init=nope", env=dirs)
    assert res.returncode == 2 and "--init=nope: no such published model" in res.stderr
    res = run_cli("train", "--preset", "tiny", "--name", "x", "--midi-dir", str(cello_dir),
                  f"--init={chorale_model.name}", "--units=40", env=dirs)
    assert res.returncode == 2 and "is a different network" in res.stderr
