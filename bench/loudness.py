"""How loud the radio plays: the shipped model improvising on the cello, rendered as the synth
renders it, without the make-up gain and at the default (SynthSettings.loudness_db).
Integrated loudness after ITU-R BS.1770 (K-weighting, 400 ms blocks, the absolute and the
relative gate), RMS and peak in dBFS, and the share of samples the limiter bent. Web radio
plays around -14 to -16 LUFS.

Usage: python bench/loudness.py [--seconds 90] [--seeds 3]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "services"))
sys.path.insert(0, str(REPO))

from playbach.schemas import DEFAULT_MODEL, ChannelParams, NoteEvent  # noqa: E402
from playbach.stepmodel import Improviser, StepModel  # noqa: E402
from synth.render import KNEE, Pending, Renderer  # noqa: E402
from synth.settings import FLUID_R3, SynthSettings  # noqa: E402
from tests.conftest import SHIPPED  # noqa: E402

RATE, CHUNK, CELLO = 44100, 2048, 42


def biquad(kind: str, fc: float, gain_db: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """The two K-weighting stages of BS.1770 (RBJ's high shelf and high pass), at RATE."""
    a_ = 10 ** (gain_db / 40)
    w = 2 * np.pi * fc / RATE
    alpha = np.sin(w) / (2 * q)
    c = np.cos(w)
    if kind == "shelf":
        b = [a_ * ((a_ + 1) + (a_ - 1) * c + 2 * np.sqrt(a_) * alpha),
             -2 * a_ * ((a_ - 1) + (a_ + 1) * c),
             a_ * ((a_ + 1) + (a_ - 1) * c - 2 * np.sqrt(a_) * alpha)]
        a = [(a_ + 1) - (a_ - 1) * c + 2 * np.sqrt(a_) * alpha,
             2 * ((a_ - 1) - (a_ + 1) * c),
             (a_ + 1) - (a_ - 1) * c - 2 * np.sqrt(a_) * alpha]
    else:
        b = [(1 + c) / 2, -(1 + c), (1 + c) / 2]
        a = [1 + alpha, -2 * c, 1 - alpha]
    return np.array(b) / a[0], np.array(a) / a[0]


def lufs(x: np.ndarray) -> float:
    """Integrated loudness of a mono signal in [-1, 1]."""
    for stage in (biquad("shelf", 1681.974, 3.99984, 0.70718),
                  biquad("highpass", 38.135, 0.0, 0.50033)):
        x = lfilter(*stage, x)
    block, step = int(0.4 * RATE), int(0.1 * RATE)
    power = np.array([np.mean(x[i:i + block] ** 2) for i in range(0, len(x) - block, step)])
    loud = -0.691 + 10 * np.log10(np.maximum(power, 1e-12))
    kept = power[loud > -70]
    relative = -0.691 + 10 * np.log10(kept.mean()) - 10
    kept = power[(loud > -70) & (loud > relative)]
    return float(-0.691 + 10 * np.log10(kept.mean()))


def rendered(seconds: float, seed: int, loudness_db: float) -> np.ndarray:
    imp = Improviser(StepModel(SHIPPED / DEFAULT_MODEL), 1.0, seed=seed, top_p=0.95)
    renderer = Renderer(FLUID_R3, RATE, SynthSettings.model_fields["gain"].default, CELLO,
                        loudness_db)
    for i, ev in enumerate(imp.notes(int(seconds * 8))):
        renderer.pending.append(Pending(NoteEvent.of(ev, i, 0, ChannelParams()), f"{i}-0"))
    out, pos = [], 0
    while pos < seconds * RATE:
        pcm, _ = renderer.render(pos, CHUNK, 84)
        out.append(pcm)
        pos += CHUNK
    renderer.close()
    return np.concatenate(out).astype(np.float64) / 32768


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    default = SynthSettings.model_fields["loudness_db"].default
    for db in (0.0, default):
        for seed in range(1, args.seeds + 1):
            x = rendered(args.seconds, seed, db)
            rms = 20 * np.log10(np.sqrt(np.mean(x ** 2)))
            peak = 20 * np.log10(np.abs(x).max())
            bent = np.mean(np.abs(x) > KNEE)
            print(f"make-up {db:4.1f} dB, seed {seed}: {lufs(x):6.1f} LUFS, RMS {rms:6.1f} dBFS, "
                  f"peak {peak:5.1f} dBFS, {bent:.3%} of samples through the limiter")


if __name__ == "__main__":
    main()
