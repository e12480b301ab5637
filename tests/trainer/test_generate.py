"""`generate` with the shipped model: a standard MIDI file, reproducible, without TensorFlow."""

import subprocess
import sys

import pytest
from music21 import converter

from playbach.schemas import DEFAULT_MODEL
from playbach.stepmodel import MAX_REPEAT
from tests.conftest import REPO, SHIPPED, run_cli


@pytest.mark.parametrize("notes", [1, 64])
def test_generate_writes_the_requested_notes(tmp_path, notes):
    out = tmp_path / "bach.mid"
    res = run_cli("generate", "--model", DEFAULT_MODEL, "--notes", str(notes), "--seed", "5",
                  "--instrument", "Cello", "--bpm", "100", "--out", str(out),
                  env={"MODELS_DIR": str(SHIPPED)})
    assert res.returncode == 0, res.stderr
    # music21 splits a note that crosses a barline into tied notes; merge them back to count
    score = converter.parse(str(out), quantizePost=False).stripTies()
    assert len(score.flatten().notes) == notes  # a chord counts as one note, as in the corpus
    instruments = score.flatten().getInstruments()
    assert any(i.midiProgram == 42 for i in instruments)


def test_same_seed_same_bytes_other_seed_other_music(tmp_path):
    outs = []
    for name, seed, top_p in (("a", 11, "0.95"), ("b", 11, "0.95"), ("c", 12, "0.95"),
                              ("d", 11, "0.3")):
        out = tmp_path / f"{name}.mid"
        res = run_cli("generate", "--notes", "40", "--seed", str(seed), "--temperature", "1.2",
                      "--top-p", top_p, "--out", str(out), env={"MODELS_DIR": str(SHIPPED)})
        assert res.returncode == 0, res.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]
    assert outs[0] != outs[3]  # top-p reaches generate too


def test_generation_never_imports_tensorflow(tmp_path):
    code = (
        "import sys; from pathlib import Path; from trainer.improvise import generate; "
        f"generate(Path({str(SHIPPED / DEFAULT_MODEL)!r}), Path({str(tmp_path / 'x.mid')!r}), "
        "16, 1.0, 'Cello', 90, 1); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
        "assert not bad, bad[:5]; print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_evaluate_compares_like_with_like_and_writes_only_when_asked(chorale_model, dirs):
    import json

    meta = chorale_model / "meta.json"
    before = meta.read_bytes()
    res = run_cli("evaluate", "--model", chorale_model.name, "--pieces", "3", "--notes", "16",
                  "--json", env=dirs)
    assert res.returncode == 0, res.stderr
    assert meta.read_bytes() == before  # read-only unless --record
    ev = json.loads(res.stdout)
    assert ev["pieces"] == 3 and ev["notes"] == 16 and ev["corpus_excerpts"] >= 5
    assert ev["max_repeat"] == MAX_REPEAT  # as a channel plays
    assert set(ev["statistics"]) == {
        "pitch_class_entropy", "scale_consistency", "pitch_range", "highest_note", "chord_rate",
        "mean_abs_interval", "duration_entropy", "mean_duration", "longest_exact_repeat"}
    for s in ev["statistics"].values():
        assert s["low"] <= s["median"] <= s["high"]
        assert s["inside"] == (s["low"] <= s["generated"] <= s["high"])
    res = run_cli("evaluate", "--model", chorale_model.name, "--pieces", "2", "--notes", "16",
                  "--record", env=dirs)
    assert res.returncode == 0 and "inside the band" in res.stdout, res.stderr
    recorded = json.loads(meta.read_text())["evaluation"]
    assert recorded["pieces"] == 2 and recorded["notes"] == 16


@pytest.mark.parametrize("args, message", [
    (["--pieces", "0"], "--pieces must be between 1 and 1000"),
    (["--notes", "0"], "--notes must be between"),
    (["--top-p", "0"], "--top-p must be between"),
    (["--max-repeat", "-1"], "--max-repeat must be between 0 (no limit) and"),
    (["--notes", "100000"], "excerpts of 100000 sounding events"),
])
def test_evaluate_refuses_bad_arguments(chorale_model, dirs, args, message):
    res = run_cli("evaluate", "--model", chorale_model.name, *args, env=dirs)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
