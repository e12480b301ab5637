"""`generate` and `evaluate`: improvise with the exported step model. LiteRT only, no TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from playbach.gm import program_number
from playbach.midifile import to_midi
from playbach.modeldir import ModelError, read_meta, write_json
from playbach.schemas import DEFAULT_TOP_P
from playbach.stepmodel import MAX_REPEAT, Improviser, StepModel
from playbach.vocab import Event
from trainer import musicstats
from trainer.score import load_steps

MAX_NOTES = 256  # the longest excerpt evaluate compares by default
MIN_EXCERPTS = 5  # corpus excerpts a percentile band needs at least


def improvise(folder: Path, notes: int, temperature: float = 1.0, seed: int | None = None,
              quantized: bool = False, top_p: float = DEFAULT_TOP_P,
              any_note: bool = False, max_repeat: int | None = None) -> list[Event]:
    """``notes`` sounding events (rests come on top), from the start token."""
    model = StepModel(folder, quantized=quantized)
    return list(Improviser(model, temperature, seed, top_p=top_p, any_note=any_note,
                           max_repeat=max_repeat).notes(notes))


def generate(folder: Path, out: Path, notes: int, temperature: float, instrument: str,
             bpm: float, seed: int | None, quantized: bool = False,
             top_p: float = DEFAULT_TOP_P) -> list[Event]:
    program = program_number(instrument)  # a bad name fails before any work
    events = improvise(folder, notes, temperature, seed, quantized, top_p)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(to_midi(events, bpm, program))
    return events


def corpus_pieces(folder: Path, parts: tuple[str, ...] = ("train", "val")) -> list[list[Event]]:
    """The model's pieces of ``parts`` (training, validation, test), as events (from its
    corpus.npz)."""
    vocab = StepModel(folder).vocab
    return [vocab.decode_piece(seq) for part in load_steps(folder, parts) for seq in part]


def default_length(pieces: list[list[Event]]) -> int:
    """Excerpts as long as a typical piece, at most MAX_NOTES sounding events (a chorale has
    ~50: comparing it with 256-note improvisations would compare unlike things)."""
    counts = [sum(not e.is_rest for e in p) for p in pieces]
    return int(min(MAX_NOTES, np.median(counts) // 2 * 2)) if counts else MAX_NOTES


def evaluate(folder: Path, pieces: int, notes: int | None = None, temperature: float = 1.0,
             seed: int = 0, top_p: float = DEFAULT_TOP_P, any_note: bool = False,
             max_repeat: int = MAX_REPEAT) -> dict:
    """``pieces`` improvisations of ``notes`` sounding events against the corpus' excerpts of
    the same length: each statistic of the median improvised excerpt beside the corpus band.
    ``any_note``: sampled from every note the network gives, not the corpus' range;
    ``max_repeat``: the longest exact repeat a channel lets it play (steps; 0: any)."""
    corpus = corpus_pieces(folder)
    notes = notes or default_length(corpus)
    reference = musicstats.excerpts(corpus, notes)
    if len(reference) < MIN_EXCERPTS:
        raise ModelError(f"the corpus of {folder.name} has {len(reference)} excerpts of {notes} "
                         f"sounding events, fewer than {MIN_EXCERPTS}: ask for fewer --notes")
    generated = [improvise(folder, notes, temperature, seed + i, top_p=top_p, any_note=any_note,
                           max_repeat=max_repeat) for i in range(pieces)]
    stats = musicstats.compare(generated, reference)
    judged = [s["inside"] for s in stats.values() if s["inside"] is not None]
    result = {"pieces": pieces, "notes": notes, "temperature": temperature, "top_p": top_p,
              "range": None if any_note else StepModel(folder).range, "seed": seed,
              "max_repeat": max_repeat,
              "corpus_excerpts": len(reference), "band": list(musicstats.BAND),
              "inside": sum(judged), "statistics_judged": len(judged), "statistics": stats}
    # the same judgement of Bach the model never read: what a perfect improviser would get
    unseen = musicstats.excerpts(corpus_pieces(folder, ("test",)), notes)
    if unseen:
        bach = musicstats.compare(unseen, reference)
        result["unseen_bach"] = {"excerpts": len(unseen), "inside": sum(
            bool(s["inside"]) for s in bach.values()), "statistics": {
            k: v["generated"] for k, v in bach.items()}}
    return result


def record(folder: Path, result: dict) -> None:
    """`evaluate --record`: the result into the model's meta.json (only when asked)."""
    meta = read_meta(folder)
    meta["evaluation"] = result
    write_json(folder / "meta.json", meta)


def report(result: dict) -> str:
    bach = result.get("unseen_bach", {}).get("statistics", {})
    kept = result.get("range")
    within = f", notes {kept[0]}-{kept[1]} as in the corpus" if kept else ", any note"
    limit = result.get("max_repeat")  # absent from evaluations before the limit
    within += (f", exact repeats up to {limit} steps" if limit else
               ", repeats unlimited" if limit == 0 else "")
    lines = [f"{result['pieces']} improvisations of {result['notes']} sounding events "
             f"(temperature {result['temperature']}, top-p {result['top_p']}{within}) against "
             f"{result['corpus_excerpts']} corpus excerpts of the same length:",
             f"  {'statistic':<22} {'improvised':>10} {'(mean)':>8} {'inside':>7}   corpus "
             f"p{result['band'][0]}-p{result['band'][1]} (median)"
             + ("   unseen Bach" if bach else "")]
    for name, s in result["statistics"].items():
        if s["generated"] is None:
            lines.append(f"  {name:<22} {'-':>10}")
            continue
        mark = "inside " if s["inside"] else "OUTSIDE"
        extra = f"   {bach[name]:>8.3f}" if bach.get(name) is not None else ""
        lines.append(f"  {name:<22} {s['generated']:>10.3f} {s['mean']:>8.3f} "
                     f"{s['share_inside']:>7.0%}   {s['low']:.3f} - {s['high']:.3f} "
                     f"({s['median']:.3f})  {mark}{extra}")
    lines.append(f"  {result['inside']} of {result['statistics_judged']} inside the band "
                 "(improvised: the median excerpt; inside: the share of excerpts in the band)")
    if "unseen_bach" in result:
        u = result["unseen_bach"]
        lines.append(f"  Bach's own unseen pieces ({u['excerpts']} excerpts of the model's test "
                     f"pieces), judged the same way: {u['inside']} of "
                     f"{result['statistics_judged']} inside")
    return "\n".join(lines)
