"""Command line: ``python -m trainer {train,crossval,score,generate,evaluate,calibrate,judge,
worker}``.
See ``--help`` of each."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

from playbach import settings as settings_mod
from playbach.modeldir import ModelError, check_name, model_dir
from playbach.schemas import DEFAULT_MODEL, DEFAULT_TOP_P, TOP_P
from playbach.stepmodel import MAX_REPEAT, REPEAT_REACH, RHYTHM_WARMTH, StepModel
from playbach.training import CORPORA
from playbach.vocab import PARTS_HELP, EncodingOptions, VocabError
from trainer.config import PRESETS, TrainConfig, UserError, make_config
from trainer.corpus import Corpus, Limits
from trainer.settings import TrainerSettings

log = logging.getLogger("trainer")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", allow_abbrev=False,
                                description="Train Play Bach models and improvise with them.")
    p.add_argument("--models-dir", type=Path, help="where models live (default: $MODELS_DIR)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", allow_abbrev=False,
                       help="corpus -> published model directory",
                       epilog="Any config field can be set as --key=value, e.g. --units=128 "
                              "--copy=false (see services/trainer/config.py).")
    t.add_argument("--name", default=None, help="model name (default: the preset's name)")
    _corpus_arguments(t)
    t.add_argument("--resume", action="store_true", help="continue the last run of this name")

    c = sub.add_parser("crossval", allow_abbrev=False,
                       help="k-fold cross-validation by whole pieces, against the baselines",
                       epilog="Config overrides (--key=value) as for train.")
    _corpus_arguments(c)
    c.add_argument("--folds", type=int, default=6, help="k (every piece is tested once)")
    c.add_argument("--window-model", action="store_true",
                   help="also train the original project's 40-step window LSTM per fold")
    c.add_argument("--window-stride", type=int, default=1,
                   help="its training windows' step (the original's 1 is slow; 4 is ~4x faster)")
    c.add_argument("--stratify", choices=("evenness", "none"), default="evenness",
                   help="balance the folds by how even each piece's rhythm is (every fold gets "
                        "pieces from the whole range), or none: folds at random")
    c.add_argument("--out", type=Path, help="write the result as JSON here (after every fold "
                                             "too, marked partial)")
    c.add_argument("--resume", action="store_true",
                   help="keep the folds an earlier run of the same corpus and config wrote to "
                        "--out; run the rest")
    c.add_argument("--export", type=Path,
                   help="save each fold's network here as a model directory (fold1/...), "
                        "with its own held-out pieces: judge --fold-models judges them")
    c.add_argument("--only", type=str, default="",
                   help="run only these folds (numbers from 1, comma-separated): a change "
                        "tried on the folds it should help first; --resume adds the rest later")

    s = sub.add_parser("score", allow_abbrev=False,
                       help="score a published model on a MIDI folder against its n-gram "
                            "(read-only)")
    s.add_argument("--model", default=DEFAULT_MODEL)
    s.add_argument("--midi-dir", type=Path, required=True)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")

    g = sub.add_parser("generate", allow_abbrev=False, help="improvise a MIDI file")
    g.add_argument("--model", default=DEFAULT_MODEL)
    g.add_argument("--notes", type=int, default=128, help="sounding events (rests extra)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=DEFAULT_TOP_P,
                   help=f"nucleus sampling (default {DEFAULT_TOP_P}, as a channel plays)")
    g.add_argument("--instrument", default="Acoustic Grand Piano", help="GM name or 0-127")
    g.add_argument("--bpm", type=float, default=90)
    g.add_argument("--seed", type=int)
    g.add_argument("--out", type=Path, default=Path("bach.mid"))
    g.add_argument("--int8", action="store_true", help="use step_int8.tflite")

    e = sub.add_parser("evaluate", allow_abbrev=False,
                       help="improvise pieces and compare them with the corpus")
    e.add_argument("--model", default=DEFAULT_MODEL)
    e.add_argument("--pieces", type=int, default=16, help="improvisations to compare")
    e.add_argument("--notes", type=int, help="sounding events per excerpt, on both sides "
                                             "(default: a typical training piece's, at most 256)")
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--top-p", type=float, default=DEFAULT_TOP_P,
                   help=f"nucleus sampling (default {DEFAULT_TOP_P}, as a channel plays)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--any-note", action="store_true",
                   help="sample every note the network gives, not only the corpus' range")
    e.add_argument("--max-repeat", type=int, default=MAX_REPEAT,
                   help=f"the longest exact repeat in steps a channel lets the network play "
                        f"(default {MAX_REPEAT}, as a channel plays; 0: no limit)")
    e.add_argument("--record", action="store_true", help="also write the result into the "
                                                         "model's meta.json")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")

    c = sub.add_parser("calibrate", allow_abbrev=False,
                       help="fit a model's rhythm temperature to its training pieces again "
                            "(train does it; writes meta.json -> sampling)")
    c.add_argument("--model", default=DEFAULT_MODEL)
    c.add_argument("--fold-models", type=Path, help="every fold model in this folder")
    c.add_argument("--pieces", type=int, default=16, help="improvisations per candidate")

    j = sub.add_parser("judge", allow_abbrev=False,
                       help="improvisations as a listener hears them, against held-out Bach: "
                            "distributions per excerpt and a classifier (read-only unless "
                            "--record)")
    j.add_argument("--model", default=DEFAULT_MODEL,
                   help="judged against its own test pieces (corpus.npz)")
    j.add_argument("--fold-models", type=Path,
                   help="a cross-validation's exported fold models (crossval --export DIR): "
                        "each against its own held-out pieces, every piece once")
    j.add_argument("--pieces", type=int, default=24, help="improvisations per model")
    j.add_argument("--notes", default="", help="excerpt lengths in sounding events, "
                                               "comma-separated (default: 100,300 where the "
                                               "pieces hold them)")
    j.add_argument("--temperature", type=float, default=1.0)
    j.add_argument("--top-p", type=float, default=DEFAULT_TOP_P,
                   help=f"nucleus sampling (default {DEFAULT_TOP_P}, as a channel plays)")
    j.add_argument("--seed", type=int, default=0)
    j.add_argument("--rhythm-temperature", type=float,
                   help="draw the durations this much warmer than the pitches (default: the "
                        "model's own, meta.json -> sampling)")
    j.add_argument("--no-rival", action="store_true",
                   help="skip the n-gram's free-running samples")
    j.add_argument("--radio", help="a running gateway's URL: judge what its channels played")
    j.add_argument("--minutes", type=float, default=5.0, help="how long to listen (--radio)")
    j.add_argument("--channels", type=int, default=4,
                   help="channels listened to at once, each with its own seed (--radio)")
    j.add_argument("--out", type=Path, help="write the result as JSON here")
    j.add_argument("--plot", type=Path, help="draw the distributions into this PNG")
    j.add_argument("--record", action="store_true",
                   help="also write the result (and its plot) into the model's folder")
    j.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sub.add_parser("worker", allow_abbrev=False,
                   help="train the jobs queued in Redis (the control room's Train page), one "
                        "at a time; settings from the environment (REDIS_URL, MODELS_DIR...)")
    return p


def _corpus_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", choices=list(PRESETS))
    p.add_argument("--midi-dir", type=Path, help="a folder of .mid/.midi files "
                                                 "(default: a music21 corpus, see --corpus)")
    p.add_argument("--corpus", choices=list(CORPORA), default="bach-chorales",
                   help="the music21 corpus to train on without --midi-dir")
    p.add_argument("--limit", type=int, help="use only the first N files")
    p.add_argument("--parts", default="chordify", help=PARTS_HELP)
    p.add_argument("--normal", action="store_true",
                   help="pitch classes without octaves, chords in normal order (the original's "
                        "`normal` flag)")
    p.add_argument("--transpose", action="store_true",
                   help="move every piece to C major / A minor (keys share statistics)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--max-file-mb", type=float,
                   help="skip larger files, unread (default: $MAX_FILE_MB or 2)")
    p.add_argument("--max-parse-seconds", type=float,
                   help="skip a file that takes longer to parse; its parser is killed "
                        "(default: $MAX_PARSE_SECONDS or 60)")
    p.add_argument("--max-notes", type=int,
                   help="skip a MIDI file with more notes, counted before music21 reads it "
                        "(default: $MAX_NOTES or 30000)")


def _check_generation(args: argparse.Namespace) -> None:
    if args.notes is not None and not 1 <= args.notes <= 100_000:
        raise UserError("--notes must be between 1 and 100000")
    if not 1 <= getattr(args, "pieces", 1) <= 1000:  # evaluate only
        raise UserError("--pieces must be between 1 and 1000")
    if not TOP_P[0] <= getattr(args, "top_p", 1.0) <= TOP_P[1]:
        raise UserError(f"--top-p must be between {TOP_P[0]} and {TOP_P[1]}")
    if not 0.1 <= args.temperature <= 3.0:
        raise UserError("--temperature must be between 0.1 and 3.0")
    if not 0 <= getattr(args, "max_repeat", 0) <= REPEAT_REACH:
        raise UserError(f"--max-repeat must be between 0 (no limit) and {REPEAT_REACH}")
    bpm = getattr(args, "bpm", None)  # generate has one, evaluate does not
    if bpm is not None and not 40 <= bpm <= 240:
        raise UserError("--bpm must be between 40 and 240")


def _check_writable(path: Path, what: str) -> None:
    """A folder the run writes to must be one, or be creatable: found now, not after training."""
    path = path.absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: not a writable folder")


def _check_train(args: argparse.Namespace, extra: list[str], settings: TrainerSettings,
                 models_dir: Path) -> tuple[TrainConfig, EncodingOptions, Limits]:
    """Every argument of `train` (and `crossval`), before a file is read or TensorFlow loads
    (and logs)."""
    name = check_name(getattr(args, "name", None) or args.preset)
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    cfg = make_config(args.preset, extra)
    options = EncodingOptions(not args.normal, args.parts, args.transpose)
    limits = settings.limits(max_file_mb=args.max_file_mb,
                             max_parse_seconds=args.max_parse_seconds, max_notes=args.max_notes)
    for path, what in ((models_dir, "--models-dir"), (settings.runs_dir, "RUNS_DIR"),
                       (settings.cache_dir, "CACHE_DIR")):
        _check_writable(path, what)
    if cfg.init and not cfg.init_weights(models_dir).is_file():
        raise UserError(f"--init={cfg.init}: no such published model with a model.keras in "
                        f"{models_dir}")
    run_dir = settings.runs_dir / name
    if args.command == "train" and args.resume and not (run_dir / "last.keras").is_file():
        raise UserError(f"--resume: nothing to resume in {run_dir} (no last.keras)")
    return cfg, options, limits


def _corpus(args: argparse.Namespace, cfg: TrainConfig, options: EncodingOptions,
            limits: Limits, settings: TrainerSettings, progress: bool) -> Corpus:
    """The parsed corpus, or a UserError when it is too small, still without TensorFlow."""
    from trainer.corpus import check_size, corpus_paths, load_corpus, midi_paths

    if args.midi_dir:
        source, paths = str(args.midi_dir), midi_paths(args.midi_dir, args.limit)
    elif args.corpus == "bach-chorales":  # the name the shipped model's meta.json carries
        source, paths = "music21 Bach chorales", corpus_paths(args.corpus, args.limit)
    else:
        source, paths = f"music21 {args.corpus}", corpus_paths(args.corpus, args.limit)
    corpus = load_corpus(source, paths, options, settings.cache_dir, progress=progress,
                         limits=limits)
    for skip in corpus.skipped:
        log.warning("skipped %s: %s", skip["file"], skip["reason"])
    check_size(corpus, cfg.seq_len)
    return corpus


def _train(args: argparse.Namespace, extra: list[str], argv: list[str],
           settings: TrainerSettings, models_dir: Path) -> None:
    cfg, options, limits = _check_train(args, extra, settings, models_dir)
    progress = not args.no_progress and sys.stderr.isatty()
    corpus = _corpus(args, cfg, options, limits, settings, progress)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer.train import Job, train  # TensorFlow loads here, once there is work for it

    target = train(Job(
        name=args.name or args.preset, preset=args.preset, cfg=cfg, options=options,
        corpus=corpus, models_dir=models_dir, runs_dir=settings.runs_dir, resume=args.resume,
        progress=progress, command="python -m trainer " + shlex.join(argv)))
    print(f"published {target}")


def _fold_numbers(raw: str, folds: int) -> tuple[int, ...]:
    """``--only``: fold numbers 1..folds, comma-separated (empty: every fold)."""
    try:
        numbers = tuple(int(x) for x in raw.split(",") if x.strip())
    except ValueError:
        numbers = (0,)
    if any(not 1 <= n <= folds for n in numbers):
        raise UserError(f"--only takes fold numbers from 1 to {folds}, comma-separated, "
                        f"not {raw!r}")
    return numbers


def _crossval(args: argparse.Namespace, extra: list[str], settings: TrainerSettings,
              models_dir: Path) -> None:
    cfg, options, limits = _check_train(args, extra, settings, models_dir)
    if not 2 <= args.folds <= 50:
        raise UserError("--folds must be between 2 and 50")
    if not 1 <= args.window_stride <= 64:
        raise UserError("--window-stride must be between 1 and 64")
    only = _fold_numbers(args.only, args.folds)
    if args.export is not None:
        _check_writable(args.export, "--export")
    if args.out is not None:
        _check_writable(args.out.parent, "--out")
    elif args.resume:
        raise UserError("--resume needs --out: the run whose folds it keeps")
    progress = not args.no_progress and sys.stderr.isatty()
    corpus = _corpus(args, cfg, options, limits, settings, progress)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from playbach.vocab import Vocabulary
    from trainer.crossval import CrossVal, crossval, report

    result = crossval(CrossVal(cfg, Vocabulary(options), corpus, args.folds,
                               settings.runs_dir / "crossval", args.window_model,
                               args.window_stride, cfg.init_weights(models_dir), progress,
                               args.stratify, args.out, args.resume, only, args.export))
    print(report(result))
    if args.out is not None:
        print(f"wrote {args.out}")


def _score(args: argparse.Namespace, settings: TrainerSettings, models_dir: Path) -> None:
    import json

    from trainer.corpus import load_corpus, midi_paths
    from trainer.dataset import encode
    from trainer.score import report, score

    folder = model_dir(models_dir, args.model)
    model = StepModel(folder)  # a missing or broken model fails before any parsing
    if not args.midi_dir.is_dir():
        raise UserError(f"--midi-dir {args.midi_dir}: not a folder")
    corpus = load_corpus(str(args.midi_dir), midi_paths(args.midi_dir), model.vocab.options,
                         settings.cache_dir, progress=not args.no_progress and
                         sys.stderr.isatty(), limits=settings.limits())
    for skip in corpus.skipped:
        log.warning("skipped %s: %s", skip["file"], skip["reason"])
    if not corpus.pieces:
        raise UserError(f"--midi-dir {args.midi_dir}: no readable MIDI pieces")
    result = score(folder, encode(corpus.pieces, model.vocab), [p.name for p in corpus.pieces])
    print(json.dumps(result, indent=1) if args.json else report(result))


def _folders(args: argparse.Namespace, models_dir: Path) -> list[Path]:
    """The model named by --model, or every fold model in --fold-models."""
    if args.fold_models:
        folders = sorted(p.parent for p in args.fold_models.glob("*/meta.json"))
        if not folders:
            raise UserError(f"--fold-models {args.fold_models}: no model folders in it")
        return folders
    return [model_dir(models_dir, args.model)]


def _calibrate(args: argparse.Namespace, models_dir: Path) -> None:
    from playbach import modeldir
    from trainer import calibrate

    if not 1 <= args.pieces <= 1000:
        raise UserError("--pieces must be between 1 and 1000")
    for folder in _folders(args, models_dir):
        sampling = calibrate.fit(folder, args.pieces)
        fitted = sampling["fitted"]
        print(f"{folder.name}: rhythm temperature {sampling['rhythm_temperature']} ("
              f"{fitted if isinstance(fitted, str) else fitted['ks_sum']})")
        meta = modeldir.read_meta(folder)
        meta["sampling"] = sampling
        modeldir.write_json(folder / "meta.json", meta)


def _judge(args: argparse.Namespace, models_dir: Path) -> None:
    import json

    from trainer import judge

    _check_generation(argparse.Namespace(**{**vars(args), "notes": None}))
    lengths = [int(n) for n in args.notes.split(",") if n.strip()] if args.notes else None
    if lengths and not all(8 <= n <= 2000 for n in lengths):
        raise UserError("--notes takes lengths between 8 and 2000")
    low, high = RHYTHM_WARMTH
    if args.rhythm_temperature is not None and not low <= args.rhythm_temperature <= high:
        raise UserError(f"--rhythm-temperature must be between {low} and {high}")
    folders = _folders(args, models_dir)
    held = [judge.held_out(f) for f in folders]
    if args.radio:
        from trainer.radio import listen_and_judge

        result = listen_and_judge(args.radio, held, args.minutes, args.channels, lengths,
                                  args.temperature, args.top_p, args.seed)
    else:
        played: list = []
        result = judge.judge(held, args.pieces, lengths, args.temperature, args.top_p,
                             args.seed, rival=not args.no_rival, played=played,
                             rhythm_temperature=args.rhythm_temperature)
    print(json.dumps(result, indent=1) if args.json else judge.report(result))
    if args.out:
        judge.write(result, args.out)
    plot = args.plot or (folders[0] / "judge.png" if args.record and not args.radio else None)
    if plot and not args.radio:
        judge.plot(result, held, played, plot)
        print(f"drew {plot}")
    if args.record:
        judge.record(folders[0] if len(folders) == 1 else args.fold_models, result)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, extra = _parser().parse_known_args(argv)
    if args.command == "worker":
        if extra:
            print(f"error: unknown arguments: {' '.join(extra)}", file=sys.stderr)
            return 2
        from trainer.worker import main as work

        if args.models_dir:  # the jobs' processes read their settings from the environment
            os.environ["MODELS_DIR"] = str(args.models_dir)
        work()
        return 0
    settings = settings_mod.load(TrainerSettings, "trainer")
    models_dir = args.models_dir or settings.models_dir
    try:
        if args.command not in ("train", "crossval") and extra:
            raise UserError(f"unknown arguments: {' '.join(extra)}")
        if args.command == "train":
            _train(args, extra, argv, settings, models_dir)
        elif args.command == "crossval":
            _crossval(args, extra, settings, models_dir)
        elif args.command == "score":
            _score(args, settings, models_dir)
        elif args.command == "generate":
            from trainer.improvise import generate

            _check_generation(args)
            events = generate(model_dir(models_dir, args.model), args.out, args.notes,
                              args.temperature, args.instrument, args.bpm, args.seed, args.int8,
                              args.top_p)
            print(f"wrote {args.out}: {len(events)} events "
                  f"({sum(not e.is_rest for e in events)} sounding)")
        elif args.command == "judge":
            _judge(args, models_dir)
        elif args.command == "calibrate":
            _calibrate(args, models_dir)
        else:
            import json

            from trainer.improvise import evaluate, record, report

            _check_generation(args)
            folder = model_dir(models_dir, args.model)
            result = evaluate(folder, args.pieces, args.notes, args.temperature, args.seed,
                              args.top_p, args.any_note, args.max_repeat)
            print(json.dumps(result, indent=1) if args.json else report(result))
            if args.record:
                record(folder, result)
                print(f"recorded in {folder / 'meta.json'}")
    except (UserError, ModelError, VocabError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. publishing into a folder that became unwritable: not 0
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sys.exit(main())
