"""A WebSocket listener for the tests: collects audio, note events and other events."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from dataclasses import dataclass, field

import numpy as np
import websockets


@dataclass
class Heard:
    hello: dict = field(default_factory=dict)
    # the timeline as a player keeps it (a new take replaces from its pos on): pos, pcm, when
    chunks: list[tuple[int, np.ndarray, float]] = field(default_factory=list)
    frames: list[tuple[int, int, float]] = field(default_factory=list)  # all: pos, take, when
    ver: int = -1
    splices: list[int] = field(default_factory=list)  # where newer takes began
    notes: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    closed: str | None = None

    @property
    def pcm(self) -> np.ndarray:
        return np.concatenate([c[1] for c in self.chunks]) if self.chunks else np.zeros(0)

    def seconds(self, rate: int = 44100) -> float:
        return len(self.pcm) / rate

    def rms(self) -> float:
        pcm = self.pcm.astype(np.float64)
        return float(np.sqrt(np.mean(pcm**2))) if len(pcm) else 0.0

    def take(self, pos: int, ver: int, pcm: np.ndarray) -> None:
        """A frame, as the player takes it: a newer take replaces the audio from ``pos`` on."""
        now = time.monotonic()
        self.frames.append((pos, ver, now))
        if ver > self.ver:
            if self.ver >= 0:
                while self.chunks and self.chunks[-1][0] >= pos:
                    self.chunks.pop()
                if self.chunks and self.chunks[-1][0] + len(self.chunks[-1][1]) > pos:
                    start, old, when = self.chunks.pop()
                    self.chunks.append((start, old[:pos - start], when))
                self.notes = [n for n in self.notes if n["pos"] < pos or n["ver"] >= ver]
                self.splices.append(pos)
            self.ver = ver
        elif ver < self.ver:
            return
        self.chunks.append((pos, pcm, now))

    def receive(self, msg: bytes | str) -> None:
        """One WebSocket message: a frame (position, take, PCM) or a JSON event."""
        if isinstance(msg, bytes):
            pos, ver = struct.unpack_from("<QI", msg)
            self.take(pos, ver, np.frombuffer(msg[12:], np.int16))
            return
        event = json.loads(msg)
        if event["type"] == "hello":
            self.hello = event
        elif event["type"] == "notes":
            self.notes.extend({**n, "ver": event.get("ver", 0), "at": time.monotonic()}
                              for n in event["notes"])
        else:
            self.events.append(event)

    def audio_at(self, pos: int, frames: int) -> np.ndarray:
        """PCM of the stream's samples [pos, pos + frames), from what was heard."""
        out = []
        for start, pcm, _ in self.chunks:
            a, b = max(pos, start), min(pos + frames, start + len(pcm))
            if a < b:
                out.append(pcm[a - start:b - start])
        return np.concatenate(out) if out else np.zeros(0, np.int16)


async def listen(base: str, cid: str, seconds: float, heard: Heard | None = None,
                 until=None, **connect) -> Heard:
    """Listen for ``seconds`` (or until ``until(heard)`` is true)."""
    heard = heard or Heard()
    url = base.replace("http://", "ws://") + f"/ws/{cid}"
    deadline = time.monotonic() + seconds
    async with websockets.connect(url, max_size=2**22, **connect) as ws:
        try:
            while time.monotonic() < deadline and not (until and until(heard)):
                try:
                    msg = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
                except TimeoutError:
                    break
                heard.receive(msg)
        except websockets.ConnectionClosed as exc:
            heard.closed = f"{exc.rcvd.code} {exc.rcvd.reason}" if exc.rcvd else "closed"
    return heard
