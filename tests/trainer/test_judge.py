"""The judge: its excerpt statistics on music whose answers are known, its tests on samples
whose answers are known (the same distribution: chance; a different one: told apart), and
the command on a real (tiny) trained model."""

from __future__ import annotations

import json
from fractions import Fraction as F

import numpy as np
import pytest

from playbach.vocab import Event
from tests.conftest import run_cli
from trainer import calibrate, judge
from trainer import musicstats as ms

SCALE = ("C3", "D3", "E3", "F3", "G3", "A3", "B3", "C4")


def line(durations: list[F], pitches=SCALE) -> list[Event]:
    return [Event(pitches[i % len(pitches)], d) for i, d in enumerate(durations)]


def test_rhythm_statistics_count_onsets_and_their_intervals():
    quarters = line([F(1)] * 16)
    assert ms.onsets_per_beat(quarters) == 1.0 and ms.top_ioi_share(quarters) == 1.0
    assert ms.ioi_entropy(quarters) == 0.0 and ms.triplet_share(quarters) == 0.0
    mixed = line([F(1, 4)] * 12 + [F(1, 6)] * 3 + [F(1, 2)])
    assert ms.onsets_per_beat(mixed) == 16 / 4  # 12 sixteenths, a triplet beat, an eighth
    assert ms.top_ioi_share(mixed) == 12 / 16 and ms.triplet_share(mixed) == 3 / 16
    rested = [Event("C3", F(1, 2)), Event("R", F(1, 2)), Event("D3", F(1))]
    assert ms.iois(rested) == [F(1), F(1)]  # a rest lengthens the interval
    assert ms.long_note_rate(line([F(1, 4)] * 7 + [F(1)])) == 1 / 8


def test_interval_and_contour_statistics():
    up = line([F(1, 4)] * 8)  # a scale up: steps, never turning
    assert ms.step_share(up) == 1.0 and ms.leap_share(up) == 0.0
    assert ms.contour_turns(up) == 0.0 and ms.register_drift(up) > 5
    zigzag = line([F(1, 4)] * 8, ("C3", "G3") * 4)  # fifths up and down
    assert ms.leap_share(zigzag) == 1.0 and ms.contour_turns(zigzag) == 1.0
    assert ms.register_drift(zigzag) == 0.0


def test_ks_is_near_zero_for_one_sample_and_one_for_disjoint_ones():
    rng = np.random.default_rng(0)
    same = rng.normal(size=400)
    d, p = judge.ks(same[:200], same[200:])
    assert d < 0.15 and p > 0.05
    d, p = judge.ks(rng.normal(size=100), rng.normal(size=100) + 5)
    assert d == 1.0 and p < 1e-6


def excerpts(kind: str, n: int, rng) -> list[list[Event]]:
    """Excerpts that differ by their rhythm only: even sixteenths, or mixed values."""
    out = []
    for _ in range(n):
        if kind == "even":
            durations = [F(1, 4)] * 48
        else:
            durations = [F(1, 4), F(1, 2), F(1, 4), F(1, 8), F(1, 8), F(1)] * 8
        pitches = [f"{'CDEFGAB'[k]}3" for k in rng.integers(0, 7, len(durations))]
        out.append(line(durations, pitches))
    return out


def test_the_classifier_is_at_chance_on_one_source_and_certain_on_two():
    rng = np.random.default_rng(1)
    same = judge.classify(excerpts("mixed", 40, rng), excerpts("mixed", 40, rng))
    apart = judge.classify(excerpts("even", 40, rng), excerpts("mixed", 40, rng))
    assert abs(same["balanced_accuracy"] - 0.5) < 0.15, same
    assert apart["balanced_accuracy"] > 0.95, apart


def test_monotone_excerpts_are_counted_and_out_of_band_ones_flagged():
    rng = np.random.default_rng(2)
    j = judge.judge_excerpts(excerpts("even", 20, rng), excerpts("mixed", 20, rng))
    assert j["monotone"] == 1.0 and j["bach_monotone"] == 0.0
    assert j["statistics"]["top_ioi_share"]["inside"] == 0.0
    assert j["statistics"]["pitch_class_entropy"]["inside"] > 0.5  # pitches alike


def test_judge_a_trained_model_against_its_held_out_pieces(chorale_model, dirs, tmp_path):
    """The command on a real (tiny) model: the network and the n-gram rival each judged at
    two lengths, the plot drawn, nothing written to the model without --record."""
    before = (chorale_model / "meta.json").read_text()
    out, png = tmp_path / "judge.json", tmp_path / "judge.png"
    res = run_cli("judge", "--model", chorale_model.name, "--pieces", "4", "--notes", "8,16",
                  "--out", str(out), "--plot", str(png), env=dirs)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["lengths"]) == {"8", "16"}
    for entry in result["lengths"].values():
        assert set(entry) == {"network", "ngram"}
        assert entry["network"]["excerpts"] >= 4 and entry["network"]["bach_excerpts"] > 0
        assert set(entry["network"]["statistics"]) <= set(judge.JUDGED)
    assert "classifier" in res.stdout and png.stat().st_size > 10_000
    assert (chorale_model / "meta.json").read_text() == before
    bad = run_cli("judge", "--model", chorale_model.name, "--notes", "3", env=dirs)
    assert bad.returncode == 2 and "--notes takes lengths between 8 and 2000" in bad.stderr
    bad = run_cli("judge", "--model", chorale_model.name, "--rhythm-temperature", "9", env=dirs)
    assert bad.returncode == 2 and "--rhythm-temperature must be between 0.5 and 3" in bad.stderr


def test_train_fits_the_rhythm_temperature_and_calibrate_fits_it_again(chorale_model, dirs):
    """Fitted to the training pieces at the end of train (the tiny preset tries every
    candidate on 2 improvisations), recorded in meta.json, and fitted again on demand."""
    sampling = json.loads((chorale_model / "meta.json").read_text())["sampling"]
    assert sampling["rhythm_temperature"] in calibrate.CANDIDATES
    assert set(sampling["fitted"]["ks_sum"]) == {str(c) for c in calibrate.CANDIDATES}
    assert sampling["fitted"]["against"] == "training pieces"
    res = run_cli("calibrate", "--model", chorale_model.name, "--pieces", "2", env=dirs)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{chorale_model.name}: rhythm temperature" in res.stdout
    again = json.loads((chorale_model / "meta.json").read_text())["sampling"]
    assert again["fitted"]["pieces"] == 2 and again == sampling  # same seeds, same fit


@pytest.mark.parametrize("durations", [[F(1, 2), F(1, 4), F(1, 6), F(3, 2)]])
def test_a_midi_file_reads_back_as_the_events_it_was_written_from(durations):
    from playbach.midifile import file_events, to_midi

    events = [*line(durations), Event("R", F(1, 4)), Event("G2.D3", F(1))]
    assert file_events(to_midi(events, 84, 42)) == events
