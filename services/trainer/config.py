"""Training configuration: presets and ``--key=value`` overrides (nanoGPT-style)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path

from playbach.modeldir import model_dir
from playbach.training import PRESETS as PRESET_NAMES


def stretches(factors: str) -> tuple[Fraction, ...]:
    """The tempo changes a config names (``stretch_factors``: "1/2,2", ...)."""
    return tuple(Fraction(f.strip()) for f in factors.split(",") if f.strip())


class UserError(Exception):
    """A problem with what the user asked for; reported as one line, exit code 2."""


@dataclass
class TrainConfig:
    # data
    seq_len: int = 64  # window length the model is trained on
    stride: int = 8  # step between windows (the original's `last` objective used 1)
    val_fraction: float = 0.1  # of pieces (of windows with split=windows)
    test_fraction: float = 0.1
    objective: str = "seq2seq"  # seq2seq: a label at every step | last: the original's one label
    split: str = "pieces"  # pieces: honest | windows: the original's random split of windows
    augment: bool = True  # each epoch, every training window in a random key (see KEYS)
    augment_share: float = 1.0  # of the windows moved each epoch; the rest stay in Bach's key
    aug_low: int = 36  # that keeps its notes within MIDI aug_low..aug_high: C2 to C6 fits the
    aug_high: int = 84  # cello and the four voices of a chorale
    stretch_share: float = 0.0  # of the windows moved to another tempo each epoch
    stretch_factors: str = "1/2,2/3,3/2,2"  # the tempo changes drawn from (dataset.stretch)
    # model
    embed_pitch: int = 64
    embed_duration: int = 16
    embed_velocity: int = 8
    units: int = 160  # 256 overfits the chorales; 160 keeps the shipped model well under 10 MB
    layers: int = 2
    dropout: float = 0.3
    note_features: bool = True  # each note's pitch class and octave as fixed inputs
    context: bool = True  # the interval and the metric position as inputs
    relative: bool = True  # pitch logits by interval from the last note, beside absolute ones
    copy: bool = True  # a pointer that copies notes, intervals (and durations) from the past
    copy_window: int = 64  # steps the pointer looks back
    copy_dim: int = 64  # its query and key size
    copy_duration: bool = True  # durations copied too, not only pitches
    copy_recency: bool = False  # the pointer also learns a bias per distance back
    copy_match: int = 0  # and one per match length up to this (0: off; layers.Pointer)
    key_profile: bool = False  # the piece's pitch classes so far as an input and a key bias
    voices: bool = True  # each note's place in its chord, and intervals from the chords' notes
    key: bool = True  # the piece's key (tonic, mode, register) as a condition (playbach.keys)
    joins: bool = True  # the pitch given whether its step joins a chord: p(duration) p(pitch | +)
    rhythm: int = 0  # units of a second LSTM that reads only the rhythm (layers.Rhythm); 0: off
    duration_weight: float = 0.5  # the duration head's share of the loss (pitch 1)
    init: str = ""  # a published model whose weights training starts from (same network)
    # optimisation
    batch_size: int = 64
    learning_rate: float = 2e-3
    epochs: int = 100
    patience: int = 10  # early stopping on validation loss; the best weights are kept
    seed: int = 1
    # reports
    original_protocol: bool = False  # also train the leaky way (a random split of windows)
    eval_pieces: int = 8  # pieces `evaluate` improvises at the end of training
    eval_notes: int = 0  # sounding events per excerpt; 0: a typical piece's, at most 256
    # improvisations per candidate when fitting the rhythm temperature (calibrate.py; 0: none,
    # the durations drawn at the channel's temperature). Sampling only: the network is the same
    calibrate_pieces: int = 16

    def __post_init__(self) -> None:
        if self.objective not in ("seq2seq", "last"):
            raise UserError(f"objective must be seq2seq or last, not {self.objective!r}")
        if self.split not in ("pieces", "windows"):
            raise UserError(f"split must be pieces or windows, not {self.split!r}")
        for name in ("seq_len", "stride", "units", "layers", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1")
        if not 0 <= self.dropout < 1:
            raise UserError("dropout must be in [0, 1)")
        if not 0 < self.val_fraction + self.test_fraction < 1:
            raise UserError("val_fraction + test_fraction must be in (0, 1)")
        if not 0 <= self.augment_share <= 1:
            raise UserError("augment_share must be in [0, 1]")
        if not 0 <= self.stretch_share <= 1:
            raise UserError("stretch_share must be in [0, 1]")
        if not 0 <= self.aug_low < self.aug_high <= 127:
            raise UserError("aug_low and aug_high must be MIDI notes, low below high")
        if self.copy and (self.copy_window < 1 or self.copy_dim < 1):
            raise UserError("copy_window and copy_dim must be at least 1")
        if self.rhythm < 0 or not self.duration_weight > 0:  # NaN too
            raise UserError("rhythm must be at least 0 (off) and duration_weight above 0")
        try:
            factors = stretches(self.stretch_factors)
        except (ValueError, ZeroDivisionError):
            raise UserError(f"stretch_factors {self.stretch_factors!r}: fractions separated by "
                            "commas, e.g. 1/2,2") from None
        if not factors or not all(0 < f <= 4 and f != 1 for f in factors):
            raise UserError("stretch_factors: one or more tempo changes above 0, at most 4, "
                            "none 1")
        if not 0 <= self.copy_match <= 64:
            raise UserError("copy_match must be between 0 (off) and 64")


    def init_weights(self, models_dir: Path) -> Path | None:
        """The model.keras of the published model ``--init`` names (None without one)."""
        return model_dir(models_dir, self.init) / "model.keras" if self.init else None


def with_defaults(config: dict) -> dict:
    """An earlier run's recorded config, with the fields added since at their defaults: each
    new field's default does what runs did before it, so the run is still the same run."""
    return {**{f.name: f.default for f in fields(TrainConfig)}, **config}


PRESETS: dict[str, dict[str, object]] = {
    # Tests and CI: trains in seconds on 2 CPU cores.
    "tiny": dict(seq_len=32, stride=16, embed_pitch=16, embed_duration=4, embed_velocity=2,
                 units=32, layers=1, dropout=0.1, batch_size=16, epochs=3, patience=2,
                 copy_window=16, copy_dim=16, eval_pieces=2, calibrate_pieces=2),
    # The shipped model (see `make train`).
    "default": {},
}


assert set(PRESETS) == set(PRESET_NAMES), "playbach.training.PRESETS names the same presets"


def _coerce(field: dataclasses.Field, raw: str) -> object:
    kind = field.type if isinstance(field.type, type) else eval(field.type)
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"--{field.name} takes true or false, not {raw!r}")
    try:
        return kind(raw)
    except ValueError:
        raise UserError(f"--{field.name} takes a {kind.__name__}, not {raw!r}") from None


def make_config(preset: str, overrides: list[str]) -> TrainConfig:
    """The preset, then each ``--key=value`` (unknown keys are an error, not ignored)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    known = {f.name: f for f in fields(TrainConfig)}
    for item in overrides:
        key, sep, raw = item.removeprefix("--").partition("=")
        key = key.replace("-", "_")
        if not item.startswith("--") or not sep or key not in known:
            raise UserError(
                f"unknown option {item!r}; config overrides are --key=value with key one of: "
                + ", ".join(known)
            )
        values[key] = _coerce(known[key], raw)
    return TrainConfig(**values)  # type: ignore[arg-type]
