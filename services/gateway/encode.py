"""Compressed streams, encoded once per channel per gateway process, never per listener, with
FFmpeg's libopus and LAME through PyAV: raw Opus packets for the browser player (WebCodecs
decodes them), and for players that cannot take raw PCM (VLC, car radios, smart speakers, an
``<audio>`` tag on iOS) Ogg Opus and MP3.

Each write of the muxer is a whole Ogg page (pages of 40 ms) or whole MP3 frames, so a
listener can join between any two; an Ogg listener first gets the stream's two header pages."""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass

import av
import numpy as np

from gateway import metrics

# At most 96 kbps on the wire, container included, mono (the PCM stream is 705 kbps): Opus
# at 80 kbps, its variable rate constrained, in 40 ms Ogg pages (a page costs ~28 bytes);
# MP3 at a constant 96 kbps.
BITRATE = {"ogg": 80_000, "mp3": 96_000}


@dataclass(frozen=True)
class Format:
    container: str
    codec: str
    rate: int | None  # the codec's sample rate; None: the stream's own
    media_type: str
    options: dict[str, str]


FORMATS = {
    # Opus runs at 48 kHz: the 44.1 kHz stream is resampled once, here
    "ogg": Format("ogg", "libopus", 48_000, "audio/ogg", {"page_duration": "40000"}),
    "mp3": Format("mp3", "libmp3lame", None, "audio/mpeg",
                  {"write_xing": "0", "id3v2_version": "0"}),
}


class _Sink(io.RawIOBase):
    """Collects what the muxer writes, one part per write."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> list[bytes]:
        parts, self.parts = self.parts, []
        return parts


class Encoder:
    """One channel's PCM (s16le mono at ``rate``) in, the container's bytes out."""

    def __init__(self, name: str, rate: int) -> None:
        self.format, self.rate = FORMATS[name], rate
        self.sink = _Sink()
        self.container = av.open(self.sink, mode="w", format=self.format.container,
                                 options=self.format.options)
        out_rate = self.format.rate or rate
        self.stream = self.container.add_stream(
            self.format.codec, rate=out_rate,
            options={"vbr": "constrained"} if self.format.codec == "libopus" else {})
        self.stream.bit_rate = BITRATE[name]
        self.stream.layout = "mono"
        self.resampler = av.AudioResampler(format=self.stream.format.name, layout="mono",
                                           rate=out_rate)
        self.pts = 0
        self.header: list[bytes] = []  # what a listener joining later must get first
        self.seconds = 0.0  # CPU spent encoding

    def encode(self, pcm: bytes) -> list[bytes]:
        """The container's bytes for this PCM, as whole pages (Ogg) or frames (MP3)."""
        t = time.process_time()
        samples = np.frombuffer(pcm, np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = self.rate, self.pts
        self.pts += samples.shape[1]
        for resampled in self.resampler.resample(frame):
            for packet in self.stream.encode(resampled):
                self.container.mux(packet)
        parts = self.sink.take()
        if self.format.container == "ogg" and len(self.header) < 2:
            while parts and len(self.header) < 2:  # OpusHead, then OpusTags: a page each
                self.header.append(parts.pop(0))
        spent = time.process_time() - t
        self.seconds += spent
        metrics.ENCODE_SECONDS.labels(self.format.container).inc(spent)
        return parts

    def close(self) -> None:
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            self.container.close()  # nothing left to say to a listener that is gone


OPUS_RATE = 48_000  # Opus runs at 48 kHz: positions of packets are counted at this rate
PACKET_SAMPLES = OPUS_RATE // 50  # a 20 ms packet


class OpusPackets:
    """The browser player's stream: 20 ms Opus packets, each with its position on the
    channel's timeline counted at 48 kHz (the stream's own position times 48000 / rate)."""

    def __init__(self, rate: int) -> None:
        self.rate, self.seconds = rate, 0.0
        self.next_pos = -1  # the stream position the next PCM must start at

    def _start(self, pos: int) -> None:
        self.ctx = av.CodecContext.create("libopus", "w")
        self.ctx.sample_rate, self.ctx.layout, self.ctx.format = OPUS_RATE, "mono", "s16"
        self.ctx.bit_rate = BITRATE["ogg"]
        self.ctx.options = {"vbr": "constrained"}
        self.ctx.open()
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        self.origin = round(pos * OPUS_RATE / self.rate)  # 48 kHz position of the first sample
        self.pts = 0

    def encode(self, pos: int, pcm: bytes) -> list[tuple[int, bytes]]:
        """(48 kHz position, packet) for each packet this PCM completes. PCM that does not
        follow on (frames dropped, a new timeline) starts the encoder afresh there."""
        t = time.process_time()
        if pos != self.next_pos:
            self._start(pos)
        samples = np.frombuffer(pcm, np.int16).reshape(1, -1)
        self.next_pos = pos + samples.shape[1]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = self.rate, self.pts
        self.pts += samples.shape[1]
        out = []
        for resampled in self.resampler.resample(frame):
            for packet in self.ctx.encode(resampled):
                at = self.origin + packet.pts  # pts: at 48 kHz, from -312 (the encoder's delay)
                if at >= 0:  # (before sample 0 of a timeline there is nothing to hear)
                    out.append((at, bytes(packet)))
        spent = time.process_time() - t
        self.seconds += spent
        metrics.ENCODE_SECONDS.labels("opus").inc(spent)
        return out

    def close(self) -> None:
        """Nothing to flush: a listener that is gone needs no last packet."""
