"""The compressed streams, measured on the music itself: 30 s of the shipped cello-suites model
rendered by the synth's FluidSynth, encoded by the gateway's encoders (``gateway/encode.py``)
into Ogg Opus and MP3, decoded again with FFmpeg; beside raw PCM (what /ws and .wav send).

Prints, per format: bits per second on the wire (container included), what an hour costs a
phone, the encoder's real-time factor (one encoder serves every listener of a channel), and
the quality: SNR of the decoded audio against the PCM it came from, after aligning the
codec's delay.

Usage: python bench/streams.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "services"))

from gateway.encode import Encoder  # noqa: E402
from playbach.schemas import DEFAULT_MODEL, ChannelParams, NoteEvent  # noqa: E402
from playbach.stepmodel import Improviser, StepModel  # noqa: E402
from synth.render import Pending, Renderer  # noqa: E402
from synth.settings import FLUID_R3  # noqa: E402
from tests.conftest import SHIPPED  # noqa: E402

RATE, CHUNK = 44100, 2048


def music(seconds: float) -> list[bytes]:
    imp = Improviser(StepModel(SHIPPED / DEFAULT_MODEL), 1.0, seed=7)
    renderer = Renderer(FLUID_R3, RATE, 0.5, 42)
    for i, ev in enumerate(imp.notes(400)):
        renderer.pending.append(Pending(NoteEvent.of(ev, i, 0, ChannelParams()), f"{i}-0"))
    chunks, pos = [], 0
    while pos < seconds * RATE:
        pcm, _ = renderer.render(pos, CHUNK, 84)
        chunks.append(pcm.tobytes())
        pos += CHUNK
    renderer.close()
    return chunks


def decoded(data: bytes) -> np.ndarray:
    """Mono float at 44.1 kHz, whatever the codec's rate."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    out = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(audio=0):
            for f in resampler.resample(frame):
                out.append(f.to_ndarray().reshape(-1))
    for f in resampler.resample(None):
        out.append(f.to_ndarray().reshape(-1))
    return np.concatenate(out)


def snr_db(reference: np.ndarray, test: np.ndarray) -> tuple[float, int]:
    """SNR after the best alignment (the codec's delay, searched within 4096 samples)."""
    ref = reference[RATE:-RATE]  # leave the edges (the encoder's start and flush)
    best, lag = -np.inf, 0
    for shift in range(-4096, 4097):
        seg = test[RATE + shift:RATE + shift + len(ref)]
        if len(seg) < len(ref):
            continue
        score = float(np.dot(ref[:8192], seg[:8192]))
        if score > best:
            best, lag = score, shift
    seg = test[RATE + lag:RATE + lag + len(ref)]
    gain = float(np.dot(ref, seg) / np.dot(seg, seg))  # the level, as a listener would not hear
    noise = ref - gain * seg
    return 10 * np.log10(np.sum(ref**2) / np.sum(noise**2)), lag


def main(args) -> None:
    chunks = music(args.seconds)
    reference = np.frombuffer(b"".join(chunks), np.int16).astype(np.float64) / 32768
    seconds = len(reference) / RATE
    pcm_bps = RATE * 16
    print(f"{seconds:.1f} s of cello-suites on a cello (FluidSynth, FluidR3_GM)")
    print("  stream         kbit/s  MB an hour  encoder (x real time)  SNR vs PCM")
    print(f"  PCM (/ws, wav) {pcm_bps / 1000:6.0f}  {pcm_bps * 3600 / 8e6:10.0f}  "
          f"{'-':>21}  -")
    for name in ("ogg", "mp3"):
        encoder = Encoder(name, RATE)
        body = b"".join(b"".join(encoder.encode(chunk)) for chunk in chunks)
        data = b"".join(encoder.header) + body  # (the header is made by the first encode)
        encoder.close()
        bps = len(data) * 8 / seconds
        snr, lag = snr_db(reference, decoded(data))
        label = {"ogg": "Ogg Opus", "mp3": "MP3"}[name]
        print(f"  {label:14s} {bps / 1000:6.1f}  {bps * 3600 / 8e6:10.1f}  "
              f"{seconds / encoder.seconds:21.0f}  {snr:5.1f} dB (delay {lag} samples)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=30)
    main(p.parse_args())
