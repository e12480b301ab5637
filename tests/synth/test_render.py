"""The renderer with real FluidSynth and FluidR3_GM: sample-accurate notes, tempo, the tone."""

import numpy as np
import pytest

from playbach.schemas import NoteEvent
from synth.render import KNEE, Pending, Renderer, instrument_names, limit
from synth.settings import FLUID_R3

RATE, CHUNK = 44100, 2048


def note(seq: int, midi: list[int], beats: float) -> Pending:
    ev = NoteEvent(seq=seq, beat=0, pitch=".".join(map(str, midi)), midi=midi, duration=beats,
                   velocity=100, model="m", temperature=1.0)
    return Pending(ev, f"{seq}-0")


def render(r: Renderer, seconds: float, bpm: float):
    pcm, ons, pos = [], [], 0
    while pos < seconds * RATE:
        out, found = r.render(pos, CHUNK, bpm)
        pcm.append(out)
        ons += [(pos + n.offset, n) for n in found]
        pos += CHUNK
    return np.concatenate(pcm).astype(float), ons


@pytest.fixture
def piano():
    r = Renderer(FLUID_R3, RATE, 0.5, program=0)
    yield r
    r.close()


def test_notes_sound_exactly_where_their_note_on_says(piano):
    piano.pending.extend([note(0, [], 1.5), note(1, [64], 0.5), note(2, [67, 72], 2)])
    pcm, ons = render(piano, 3.0, bpm=120)  # a beat is 0.5 s = 22050 samples
    assert [(pos, n.seq) for pos, n in ons] == [(0, 0), (33075, 1), (44100, 2)]
    assert ons[2][1].duration == pytest.approx(1.0) and ons[2][1].beats == 2
    assert np.abs(pcm[:33075]).max() <= 2  # the rest is silent (FluidSynth dithers by 1)
    onset = int(np.argmax(np.abs(pcm) > 20))
    # to FluidSynth's 64-frame block plus the attack, never at a chunk boundary (32768)
    assert 33075 <= onset < 33075 + 192
    assert np.sqrt(np.mean(pcm[33075:33075 + 4096] ** 2)) > 200
    assert piano.last_seq == 2 and piano.last_id == "2-0"


def test_tempo_sets_the_spacing_and_late_notes_start_late(piano):
    piano.pending.extend([note(0, [60], 1), note(1, [62], 1)])
    _, ons = render(piano, 0.5, bpm=240)  # a beat: 11025 samples
    assert [p for p, _ in ons] == [0, 11025]
    _, more = render(piano, 0.2, bpm=240)
    assert not more and piano.starved_chunks > 0  # nothing left to play: the clock waits
    piano.pending.append(note(2, [64], 1))
    _, late = render(piano, 0.1, bpm=240)
    assert len(late) == 1  # it starts as soon as it arrives


def test_instrument_changes_the_sound(piano):
    piano.pending.append(note(0, [60], 4))
    a, _ = render(piano, 0.5, bpm=60)
    organ = Renderer(FLUID_R3, RATE, 0.5, program=19)
    organ.pending.append(note(0, [60], 4))
    b, _ = render(organ, 0.5, bpm=60)
    organ.close()
    spectra = [np.abs(np.fft.rfft(x[4096:4096 + 8192])) for x in (a, b)]
    spectra = [s / s.sum() for s in spectra]
    assert 0.5 * np.abs(spectra[0] - spectra[1]).sum() > 0.2


def test_the_audio_test_tone_is_440_hz(piano):
    piano.tone()
    pcm, ons = render(piano, 1.0, bpm=90)
    assert not ons
    window = pcm[:RATE // 2]
    peak = np.fft.rfftfreq(len(window), 1 / RATE)[np.abs(np.fft.rfft(window)).argmax()]
    assert peak == pytest.approx(440, abs=2)
    assert np.abs(window).max() == pytest.approx(0.25 * 32767, rel=0.01)


def test_instrument_names_come_from_the_soundfont():
    names = instrument_names(FLUID_R3)
    assert len(names) == 128 and names[42] == "Cello" and names[0] == "Yamaha Grand Piano"


def largest_jump(pcm: np.ndarray) -> float:
    return float(np.abs(np.diff(pcm.astype(float))).max())


def test_the_tone_starts_and_stops_without_a_click(piano):
    """Music, then the audio test tone, then music again: the largest sample-to-sample jump
    at either splice is no larger than the largest inside the chunks (before: the tone cut
    in and out at chunk edges, jumps up to 0.23 of full scale)."""
    piano.pending.extend([note(i, [60 + i % 12, 64 + i % 12], 0.5) for i in range(12)])
    chunks, pos, splices = [], 0, []
    while pos < 3 * RATE:
        if pos == 16 * CHUNK:  # mid-music, notes sounding
            piano.tone()
        was_tone = piano.playing_tone
        out, _ = piano.render(pos, CHUNK, 120)
        if chunks and piano.playing_tone != was_tone:
            splices.append(len(chunks))
        chunks.append(out)
        pos += CHUNK
    assert len(splices) == 2  # into the tone and out of it
    inside = max(largest_jump(c) for c in chunks)
    at = [abs(float(chunks[i][0]) - float(chunks[i - 1][-1])) for i in splices]
    assert max(at) <= inside, (at, inside)
    across = [largest_jump(np.concatenate([chunks[i - 1][-64:], chunks[i][:512]]))
              for i in splices]
    assert max(across) <= inside, (across, inside)


def test_a_rewind_replays_the_notes_after_it_with_a_new_sound_and_no_click():
    """Back to a chunk boundary: the notes started since play again, in order, none lost or
    doubled; the new program sounds from there, held notes included; the splice is no
    sharper than the music around it."""
    r = Renderer(FLUID_R3, RATE, 0.5, program=42)
    try:
        r.pending.extend([note(i, [48 + (i * 5) % 19], 0.5 if i % 3 else 1.5) for i in range(40)])
        out, ons = {}, []
        for pos in range(0, 60 * CHUNK, CHUNK):
            out[pos], found = r.render(pos, CHUNK, 100)
            ons += [(pos + n.offset, n.seq, n.program) for n in found]
        at = 30 * CHUNK
        assert r.can_rewind(at) and not r.can_rewind(at + 1)
        r.set_program(0)
        r.rewind(at)
        ons = [o for o in ons if o[0] < at]
        for pos in range(at, 60 * CHUNK, CHUNK):
            out[pos], found = r.render(pos, CHUNK, 100)
            ons += [(pos + n.offset, n.seq, n.program) for n in found]
    finally:
        r.close()
    assert [seq for _, seq, _ in ons] == list(range(len(ons)))
    assert {p for pos, _, p in ons if pos >= at} == {0}
    assert {p for pos, _, p in ons if pos < at} == {42}
    pcm = np.concatenate([out[p] for p in sorted(out)]).astype(float)
    steps = np.abs(np.diff(pcm))
    assert steps[at - 5:at + 441].max() <= steps.max() and steps[at - 5:at + 441].max() < 1000


def test_a_cut_ends_the_sounding_note_and_starts_the_next_now(piano):
    piano.pending.extend([note(0, [60], 4)])
    render(piano, 0.5, bpm=120)  # a beat is 0.5 s: the note sounds for 2 s
    piano.cut()
    piano.pending.append(note(1, [64], 1))
    _, found = piano.render(0, CHUNK, 120)
    assert [n.seq for n in found] == [1] and found[0].offset == 0
    assert [m for _, m in piano.sounding] == [(64,)]  # the long note ended at the cut


def test_a_takeover_resumes_the_held_note_and_keeps_the_rhythm():
    """A second renderer taking over mid-note (as a new synth owner does) goes on sounding
    the note that was playing and starts the next one where the first renderer would have."""
    notes = [note(0, [48], 1.0), note(1, [55], 3.0), note(2, [60], 1.0)]
    a = Renderer(FLUID_R3, RATE, 0.5, program=42)
    a.pending.extend(notes)
    pcm_a, ons_a = render(a, 4.5, bpm=60)  # a beat is a second: note 1 from 1 s to 4 s
    a.close()
    at = 48 * CHUNK  # 2.23 s: note 1 sounds
    b = Renderer(FLUID_R3, RATE, 0.5, program=42)
    try:
        into = (at - RATE) / RATE  # beats since note 1 began
        b.last_seq, b.last_start = 1, 1.0
        b.resume(at, at / RATE, into, [n.note for n in notes[:2]], 60)
        b.pending.append(notes[2])
        pcm_b, ons_b = [], []
        for pos in range(at, int(4.5 * RATE), CHUNK):
            out, found = b.render(pos, CHUNK, 60)
            pcm_b.append(out)
            ons_b += [(pos + n.offset, n.seq) for n in found]
    finally:
        b.close()
    held = np.concatenate(pcm_b)[:4410].astype(float)
    assert np.sqrt(np.mean(held ** 2)) > 0.3 * np.sqrt(np.mean(pcm_a[at:at + 4410] ** 2))
    assert ons_b == [(pos, n.seq) for pos, n in ons_a if n.seq == 2] == [(4 * RATE, 2)]


def test_the_level_is_made_up_after_fluidsynth_and_peaks_are_rounded_off_not_clipped():
    def rendered(db: float) -> np.ndarray:
        r = Renderer(FLUID_R3, RATE, 0.5, program=19, loudness_db=db)  # an organ: sustained
        r.pending.extend(note(i, [48, 55, 64, 72], 0.5) for i in range(8))
        pcm, _ = render(r, 2.0, bpm=120)
        r.close()
        return pcm

    def dbfs(x: np.ndarray) -> float:
        return 20 * np.log10(np.sqrt(np.mean(x ** 2)) / 32768)

    plain, made_up, loudest = rendered(0.0), rendered(10.0), rendered(24.0)
    assert 8.0 < dbfs(made_up) - dbfs(plain) <= 10.05  # the limiter takes a little of the 10
    peak = np.abs(made_up).max()
    assert KNEE * 32767 < peak < 0.99 * 32767  # rounded off above the knee, short of full scale
    assert np.abs(loudest).max() <= 32767 and dbfs(loudest) > dbfs(made_up)  # never wraps
    quiet = np.linspace(-KNEE, KNEE, 101)
    assert np.array_equal(limit(quiet.copy()), quiet)  # below the knee: untouched
    loud = limit(np.array([0.9, -3.0, 50.0]))
    assert np.all(np.abs(loud) <= 1) and loud[0] < 0.9 and loud[1] < -0.99
