"""`generate` with the shipped model: a standard MIDI file, reproducible, without TensorFlow."""

import subprocess
import sys

import pytest
from music21 import converter

from tests.conftest import REPO, SHIPPED, run_cli


@pytest.mark.parametrize("notes", [1, 64])
def test_generate_writes_the_requested_notes(tmp_path, notes):
    out = tmp_path / "bach.mid"
    res = run_cli("generate", "--model", "default", "--notes", str(notes), "--seed", "5",
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
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        out = tmp_path / f"{name}.mid"
        res = run_cli("generate", "--notes", "40", "--seed", str(seed), "--temperature", "1.2",
                      "--out", str(out), env={"MODELS_DIR": str(SHIPPED)})
        assert res.returncode == 0, res.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_generation_never_imports_tensorflow(tmp_path):
    code = (
        "import sys; from pathlib import Path; from trainer.improvise import generate; "
        f"generate(Path({str(SHIPPED / 'default')!r}), Path({str(tmp_path / 'x.mid')!r}), "
        "16, 1.0, 'Cello', 90, 1); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
        "assert not bad, bad[:5]; print('ok')"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_evaluate_records_musical_statistics(chorale_model, dirs):
    res = run_cli("evaluate", "--model", chorale_model.name, "--pieces", "2", "--notes", "32",
                  env=dirs)
    assert res.returncode == 0, res.stderr
    import json

    meta = json.loads((chorale_model / "meta.json").read_text())
    ev = meta["evaluation"]
    assert ev["pieces"] == 2 and ev["notes"] == 32
    assert 0 <= ev["pitch_class_distance"] <= 1 and 0 <= ev["duration_distance"] <= 1
    for key in ("scale_consistency", "pitch_range", "mean_abs_interval", "longest_repeat"):
        assert set(ev[key]) == {"generated", "corpus"}
