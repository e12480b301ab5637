"""`generate` and `evaluate`: improvise with the exported step model. LiteRT only, no TensorFlow."""

from __future__ import annotations

from pathlib import Path

from playbach.gm import program_number
from playbach.midifile import to_midi
from playbach.modeldir import read_meta, write_json
from playbach.stepmodel import Improviser, StepModel
from playbach.vocab import Event
from trainer import musicstats


def improvise(folder: Path, notes: int, temperature: float = 1.0, seed: int | None = None,
              quantized: bool = False) -> list[Event]:
    """``notes`` sounding events (rests come on top), from the start token."""
    model = StepModel(folder, quantized=quantized)
    return list(Improviser(model, temperature, seed).notes(notes))


def generate(folder: Path, out: Path, notes: int, temperature: float, instrument: str,
             bpm: float, seed: int | None, quantized: bool = False) -> list[Event]:
    program = program_number(instrument)  # a bad name fails before any work
    events = improvise(folder, notes, temperature, seed, quantized)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(to_midi(events, bpm, program))
    return events


def evaluate(folder: Path, pieces: int, notes: int, temperature: float = 1.0,
             seed: int = 0) -> dict:
    """Improvise ``pieces`` pieces and compare their statistics with the training corpus's."""
    corpus = read_meta(folder)["corpus"]["stats"]
    generated = [improvise(folder, notes, temperature, seed + i) for i in range(pieces)]
    return {"pieces": pieces, "notes": notes, "temperature": temperature,
            **musicstats.compare(musicstats.profile(generated), corpus)}


def evaluate_and_record(folder: Path, pieces: int, notes: int, temperature: float,
                        seed: int) -> dict:
    """`evaluate` as a command: the result goes into the model's meta.json too."""
    result = evaluate(folder, pieces, notes, temperature, seed)
    meta = read_meta(folder)
    meta["evaluation"] = result
    write_json(folder / "meta.json", meta)
    return result
