"""`judge`: the music as a listener hears it, against Bach the model never read.

Teacher-forced scores ask what the network expects after Bach's own notes; a listener hears
it running free, on its own notes. So the judge improvises as a channel does and compares
*excerpts* with excerpts of held-out pieces (a model's test split; a cross-validation's fold
models between them hold out every piece once), at several lengths:

- per statistic (rhythm, intervals, register, contour, key, chords, repeats, phrase ends), the
  distribution over excerpts beside Bach's: the share of improvised excerpts inside Bach's
  10th-90th percentile, and a two-sample Kolmogorov-Smirnov test;
- a classifier two-sample test: a logistic regression on fixed per-excerpt features, trained
  to tell improvised excerpts from Bach's, cross-validated; its balanced accuracy (0.5: they
  cannot be told apart). Its features and settings are fixed here, never tuned on the model
  judged, and it must be able to fail: the best n-gram's free-running samples are judged the
  same way beside the network.

``judge --radio URL`` listens to a running stack instead: what its channels actually played
(``recent.mid``), against the model's held-out pieces."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from playbach.schemas import DEFAULT_TOP_P
from playbach.stepmodel import Improviser, StepModel
from playbach.vocab import BOS_ID, JOIN_ID, REST_ID, Event
from trainer import musicstats as ms
from trainer.improvise import corpus_pieces
from trainer.score import load_steps

BAND = ms.BAND
MONOTONE = 0.9  # one inter-onset interval for this share of an excerpt's notes or more
LENGTHS = (100, 300)  # sounding events per excerpt, where the pieces are long enough
# what the judge compares, per excerpt (musicstats), in the order reports list them
JUDGED = ("onsets_per_beat", "top_ioi_share", "ioi_entropy", "duration_entropy",
          "triplet_share", "step_share", "leap_share", "mean_abs_interval", "pitch_range",
          "contour_turns", "register_drift", "pitch_class_entropy", "scale_consistency",
          "chord_rate", "longest_exact_repeat", "long_note_rate")
# the classifier's inter-onset histogram: these lengths (quarter notes), and the rest
IOI_BINS = tuple(Fraction(x) for x in ("1/8", "1/6", "1/4", "1/3", "3/8", "1/2", "2/3", "3/4",
                                       "1", "3/2", "2"))
INTERVAL_BINS = (0, 1, 2, 3, 5, 8, 13)  # |semitones| from each: 0, 1, 2, 3-4, 5-7, 8-12, 13+
CV_FOLDS, CV_REPEATS, C = 5, 4, 1.0  # the classifier's settings, fixed before any judging


def statistic(name: str):
    return ms.STATISTICS_ALL[name]


def features(excerpt: Sequence[Event]) -> np.ndarray:
    """What the classifier sees of one excerpt: its inter-onset and interval histograms and a
    few summaries (rhythm, register, key, chords, repeats)."""
    found = ms.iois(excerpt)
    ioi = np.zeros(len(IOI_BINS) + 1)
    for x in found:
        ioi[IOI_BINS.index(x) if x in IOI_BINS else -1] += 1
    ioi /= max(len(found), 1)
    moves = np.abs(ms.moves(excerpt))
    intervals = np.bincount(np.searchsorted(INTERVAL_BINS, moves, side="right") - 1,
                            minlength=len(INTERVAL_BINS)) / max(len(moves), 1)
    summary = [statistic(n)(excerpt) for n in ("ioi_entropy", "triplet_share", "pitch_range",
                                               "pitch_class_entropy", "scale_consistency",
                                               "chord_rate", "onsets_per_beat",
                                               "contour_turns", "long_note_rate")]
    summary.append(statistic("longest_exact_repeat")(excerpt) / max(len(excerpt), 1))
    return np.nan_to_num(np.concatenate([ioi, intervals, summary]))


def ks(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value."""
    a, b = np.sort(a), np.sort(b)
    both = np.concatenate([a, b])
    d = float(np.abs(np.searchsorted(a, both, side="right") / len(a)
                     - np.searchsorted(b, both, side="right") / len(b)).max())
    n = len(a) * len(b) / (len(a) + len(b))
    lam = (np.sqrt(n) + 0.12 + 0.11 / np.sqrt(n)) * d
    k = np.arange(1, 101)
    p = float(np.clip(2 * np.sum((-1) ** (k - 1) * np.exp(-2 * (k * lam) ** 2)), 0, 1))
    return d, p


def distributions(improvised: list[list[Event]], bach: list[list[Event]]) -> dict[str, dict]:
    """Per statistic: Bach's band and median, the improvisations' median, the share of them
    inside the band, and the KS test."""
    out = {}
    for name in JUDGED:
        f = statistic(name)
        g = np.array([f(e) for e in improvised], float)
        r = np.array([f(e) for e in bach], float)
        g, r = g[~np.isnan(g)], r[~np.isnan(r)]
        if len(g) < 2 or len(r) < 2:
            continue
        low, high = np.percentile(r, BAND)
        d, p = ks(g, r)
        out[name] = {"bach_low": round(float(low), 3), "bach_median": round(float(np.median(r)),
                                                                         3),
                     "bach_high": round(float(high), 3),
                     "median": round(float(np.median(g)), 3),
                     "low": round(float(np.percentile(g, BAND[0])), 3),
                     "high": round(float(np.percentile(g, BAND[1])), 3),
                     "inside": round(float(np.mean((g >= low) & (g <= high))), 3),
                     "bach_inside": round(float(np.mean((r >= low) & (r <= high))), 3),
                     "ks": round(d, 3), "p": round(p, 4)}
    return out


def classify(improvised: list[list[Event]], bach: list[list[Event]], seed: int = 0) -> dict:
    """Balanced accuracy (mean and sd over repeated stratified k-fold) of a logistic
    regression telling the improvised excerpts from Bach's. Classes weighed by their size."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import RepeatedStratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.array([features(e) for e in [*improvised, *bach]])
    y = np.array([1] * len(improvised) + [0] * len(bach))
    folds = min(CV_FOLDS, len(improvised), len(bach))
    if folds < 2:
        return {"balanced_accuracy": None, "sd": None, "excerpts": [len(improvised), len(bach)]}
    scores = []
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=CV_REPEATS, random_state=seed)
    for fit_idx, test_idx in splitter.split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(
            C=C, class_weight="balanced", max_iter=2000))
        model.fit(x[fit_idx], y[fit_idx])
        scores.append(balanced_accuracy_score(y[test_idx], model.predict(x[test_idx])))
    return {"balanced_accuracy": round(float(np.mean(scores)), 3),
            "sd": round(float(np.std(scores, ddof=1)), 3),
            "excerpts": [len(improvised), len(bach)]}


def judge_excerpts(improvised: list[list[Event]], bach: list[list[Event]], seed: int = 0
                   ) -> dict:
    """Everything the judge says of one length's excerpts."""
    def monotone(ex: list[list[Event]]) -> float:
        tops = [ms.top_ioi_share(e) for e in ex]
        return round(float(np.mean([t >= MONOTONE for t in tops])), 3) if tops else 0.0

    stats = distributions(improvised, bach)
    return {"excerpts": len(improvised), "bach_excerpts": len(bach),
            "monotone": monotone(improvised), "bach_monotone": monotone(bach),
            "classifier": classify(improvised, bach, seed),
            "statistics": stats,
            "least_inside": min((s["inside"] for s in stats.values()), default=None)}


@dataclass
class Held:
    """One model (or fold model) and the Bach it never read."""

    folder: Path
    bach: list[list[Event]]  # its held-out pieces, whole
    train: list[np.ndarray] = field(default_factory=list)  # its training steps (the n-gram's)


def held_out(folder: Path) -> Held:
    """A model directory and its own test pieces (corpus.npz): never its training pieces."""
    train, test = load_steps(folder, ("train",)), corpus_pieces(folder, ("test",))
    return Held(folder, test, list(train[0]))


def lengths_for(pieces: list[list[Event]], asked: Sequence[int] | None) -> list[int]:
    """The excerpt lengths: as asked, else LENGTHS where a typical piece holds them, else
    half a typical piece and a whole one (a chorale has ~50 events)."""
    if asked:
        return list(asked)
    typical = int(np.median([sum(not e.is_rest for e in p) for p in pieces]))
    fits = [n for n in LENGTHS if n <= typical]
    return fits or [max(typical // 2, 8), max(typical // 2 * 2, 16)]


def improvisations(folder: Path, count: int, notes: int, temperature: float, top_p: float,
                   seed: int, rhythm_temperature: float | None = None) -> list[list[Event]]:
    """``count`` improvisations of ``notes`` sounding events, as a channel plays them (the
    durations at the model's own rhythm temperature unless one is given)."""
    model = StepModel(folder)
    return [list(Improviser(model, temperature, seed + i, top_p=top_p,
                            rhythm_temperature=rhythm_temperature).notes(notes))
            for i in range(count)]


def ngram_improvisations(train: list[np.ndarray], vocab, count: int, notes: int,
                         seed: int, order: int = 4) -> list[list[Event]]:
    """The n-gram rival running free: each head's n-gram on its own history, a step at a
    time, in the network's grammar (a step joins the chord only above a note)."""
    from trainer.ngram import NGram

    rng = np.random.default_rng(seed)
    heads = [NGram(order, size) for size in vocab.sizes]
    for h, ngram in enumerate(heads):
        ngram.fit([seq[:, h] for seq in train])

    def draw(h: int, history: list[int], allowed=None) -> int:
        p = heads[h].probs(history[-order:]).copy()
        if allowed is not None:
            p *= allowed
        return int(rng.choice(len(p), p=p / p.sum()))

    out = []
    for _ in range(count):
        history: list[list[int]] = [[BOS_ID] for _ in heads]
        sounding = 0
        while sounding <= notes:
            last = history[0][-1]
            duration = draw(1, history[1])
            if duration == JOIN_ID and not (len(history[0]) > 1 and last > REST_ID
                                            and last + 1 < vocab.sizes[0]):
                no_join = np.ones(vocab.sizes[1])
                no_join[JOIN_ID] = 0
                duration = draw(1, history[1], no_join)
            above = None
            if duration == JOIN_ID:
                above = np.zeros(vocab.sizes[0])
                above[last + 1:] = 1
            pitch = draw(0, history[0], above)
            sounding += duration != JOIN_ID and pitch != REST_ID
            for h, token in enumerate((pitch, duration, draw(2, history[2]))):
                history[h].append(token)
        steps = np.array(list(zip(*history, strict=True)))
        events = vocab.decode_piece(steps)
        kept, count_ = [], 0
        for ev in events:
            count_ += not ev.is_rest
            if count_ > notes:
                break
            kept.append(ev)
        out.append(kept)
    return out


def judge(held: list[Held], pieces: int, lengths: Sequence[int] | None = None,
          temperature: float = 1.0, top_p: float = DEFAULT_TOP_P, seed: int = 0,
          rival: bool = True, played: list | None = None,
          rhythm_temperature: float | None = None) -> dict:
    """The network's improvisations (``pieces`` per model, each as long as the longest
    excerpt) against its held-out Bach, pooled over the models given (a cross-validation's
    folds); with ``rival``, the n-gram's beside it. The improvisations, a list per model,
    are appended to ``played`` if given (for the plot)."""
    played = [] if played is None else played
    chosen = lengths_for([p for h in held for p in h.bach], lengths)
    longest = max(chosen)
    rivals = []
    for h in held:
        played.append(improvisations(h.folder, pieces, longest, temperature, top_p, seed,
                                     rhythm_temperature))
        if rival and h.train:
            rivals.append(ngram_improvisations(h.train, StepModel(h.folder).vocab, pieces,
                                               longest, seed))
    result: dict = {"models": [h.folder.name for h in held], "pieces": pieces,
                    "temperature": temperature, "top_p": top_p, "seed": seed,
                    "rhythm_temperature": [rhythm_temperature or StepModel(h.folder)
                                           .rhythm_temperature for h in held],
                    "bach_pieces": sum(len(h.bach) for h in held), "lengths": {}}
    for n in chosen:
        bach = [e for h in held for e in ms.excerpts(h.bach, n)]
        mine = [e for group in played for e in ms.excerpts(group, n)]
        entry = {"network": judge_excerpts(mine, bach, seed)}
        if rivals:
            theirs = [e for group in rivals for e in ms.excerpts(group, n)]
            entry["ngram"] = judge_excerpts(theirs, bach, seed)
        result["lengths"][str(n)] = entry
    return result


def report(result: dict) -> str:
    lines = [f"judged: {', '.join(result['models'])} ({result['bach_pieces']} held-out pieces; "
             f"{result['pieces']} improvisations a model, temperature {result['temperature']}, "
             f"top-p {result['top_p']})"]
    for n, entry in result["lengths"].items():
        for who, j in entry.items():
            c = j["classifier"]
            acc = "n/a" if c["balanced_accuracy"] is None else \
                f"{c['balanced_accuracy']:.2f} ± {c['sd']:.2f}"
            lines.append(f"  {n} notes, {who}: {j['excerpts']} excerpts vs Bach's "
                         f"{j['bach_excerpts']}; classifier {acc} (0.5: indistinguishable); "
                         f"monotone {j['monotone']:.0%} (Bach {j['bach_monotone']:.0%})")
            for name, s in j["statistics"].items():
                flag = "" if s["inside"] >= 0.7 else "  <- under 70%"
                lines.append(f"    {name:<22} {s['inside']:>5.0%} inside Bach's "
                             f"{s['bach_low']:g}-{s['bach_high']:g} (median {s['median']:g}, "
                             f"Bach {s['bach_median']:g}); KS {s['ks']:.2f}, p {s['p']:.3g}"
                             f"{flag}")
    return "\n".join(lines)


def plot(result: dict, held: list[Held], played: list[list[list[Event]]], path: Path) -> None:
    """Each statistic's distribution, the network's beside Bach's, at the longest length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(result["lengths"], key=int)
    names = list(result["lengths"][n]["network"]["statistics"])
    cols = 4
    fig, axes = plt.subplots(-(-len(names) // cols), cols, figsize=(14, 2.6 * -(-len(names)
                                                                               // cols)))
    bach = [e for h in held for e in ms.excerpts(h.bach, int(n))]
    mine = [e for group in played for e in ms.excerpts(group, int(n))]
    for ax, name in zip(axes.flat, names, strict=False):
        f = statistic(name)
        a, b = [f(e) for e in bach], [f(e) for e in mine]
        bins = np.histogram_bin_edges(np.nan_to_num(a + b), 15)
        ax.hist(a, bins, alpha=0.55, density=True, label="Bach (held out)", color="#b08a3e")
        ax.hist(b, bins, alpha=0.55, density=True, label="improvised", color="#5a6b85")
        s = result["lengths"][n]["network"]["statistics"][name]
        ax.set_title(f"{name} ({s['inside']:.0%} in band)", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    c = result["lengths"][n]["network"]["classifier"]
    fig.suptitle(f"{', '.join(result['models'])}: {n}-note excerpts; a classifier tells them "
                 f"apart {c['balanced_accuracy']} of the time (0.5: it cannot)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


def record(folder: Path, result: dict) -> None:
    """Into a model's meta.json (``judge``), or beside fold models as judge.json."""
    from playbach.modeldir import read_meta, write_json

    if (folder / "meta.json").is_file():
        write_json(folder / "meta.json", {**read_meta(folder), "judge": result})
        print(f"recorded in {folder / 'meta.json'}")
    else:
        write(result, folder / "judge.json")
        print(f"recorded in {folder / 'judge.json'}")
