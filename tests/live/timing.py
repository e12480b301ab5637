"""Measurements of the live path shared by the tests and ``bench/splices.py``: what a listener
with the player's default buffer hears when an owner replica is killed, and how soon a change
of each control reaches the listener."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np
import websockets

from playbach import streams
from tests.live.client import Heard

PLAYER_BUFFER_S = 0.3  # the web player's jitter buffer, at its start and floor (worklet.js)
SPLICE_WINDOW = 441  # samples either side of a splice where a click would be (10 ms)


def silence(heard: Heard, rate: int, buffer_s: float = PLAYER_BUFFER_S) -> float:
    """Seconds a player would fall silent: it starts once ``buffer_s`` of audio is in, then
    plays in real time; a chunk that arrives after its turn is silence until it does."""
    if not heard.chunks:
        return float("inf")
    p0, have, start = heard.chunks[0][0], 0, None
    for _, pcm, when in heard.chunks:
        have += len(pcm)
        if have >= buffer_s * rate:
            start = when
            break
    if start is None:
        return float("inf")
    late = [when - (start + (pos - p0) / rate) for pos, _, when in heard.chunks]
    return max(0.0, max(late))


def gaps(heard: Heard) -> int:
    """Places where the timeline heard jumps (a sample lost or played twice)."""
    return sum(b[0] != a[0] + len(a[1]) for a, b in itertools.pairwise(heard.chunks))


def note_faults(heard: Heard) -> tuple[int, int]:
    """Notes lost and notes repeated: the note-ons heard, in timeline order, must number
    consecutively."""
    seqs = [n["seq"] for n in sorted(heard.notes, key=lambda n: n["pos"])]
    lost = sum(max(0, b - a - 1) for a, b in itertools.pairwise(seqs))
    repeated = len(seqs) - len(set(seqs))
    return lost, repeated


def jumps(heard: Heard) -> tuple[float, float]:
    """The largest sample-to-sample step at the splices heard (where a newer take began),
    and the largest anywhere else."""
    pcm = heard.pcm.astype(np.int32)
    step = np.abs(np.diff(pcm)) if len(pcm) > 1 else np.zeros(1, np.int32)
    near = np.zeros(len(step), bool)
    p0 = heard.chunks[0][0] if heard.chunks else 0
    for at in heard.splices:
        i = at - p0
        near[max(0, i - SPLICE_WINDOW):max(0, i + SPLICE_WINDOW)] = True
    at_splices = float(step[near].max()) if near.any() else 0.0
    inside = float(step[~near].max()) if (~near).any() else 0.0
    return at_splices, inside


@dataclass
class Listening:
    """A WebSocket listener running in the background while a test acts."""

    url: str
    cid: str = "radio"

    async def __aenter__(self) -> Listening:
        self.heard = Heard()
        self.ws = await websockets.connect(
            self.url.replace("http://", "ws://") + f"/ws/{self.cid}", max_size=2**22)
        self.task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await self.ws.close()

    async def _read(self) -> None:
        async for msg in self.ws:
            self.heard.receive(msg)

    async def wait(self, found: Callable[[], float | None], timeout: float = 5.0) -> float:
        """Poll ``found`` until it gives a time (monotonic); inf after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            when = found()
            if when is not None:
                return when
            await asyncio.sleep(0.005)
        return float("inf")


# control -> two values to alternate between
CONTROLS: dict[str, tuple] = {
    "instrument": (40, 42), "bpm": (100, 84), "temperature": (0.8, 1.0),
    "top_p": (0.9, 1.0), "model": ("chorales", "cello-suites"), "seed": (None, None),
}
NOTE_KEYS = {"temperature": "temperature", "top_p": "top_p", "model": "model"}


async def control_latencies(url: str, auth: dict, control: str, trials: int,
                            cid: str = "radio", pause: float = 0.6) -> list[float]:
    """Seconds from each PATCH of ``control`` to the arrival of the first audio carrying it:
    a note-on with the new value (temperature, top-p, model), a note-on of a newer take
    (seed), or the first frame of a newer take, which the synth renders with the new sound
    (instrument, BPM)."""
    out = []
    async with Listening(url, cid) as listening, httpx.AsyncClient(timeout=10) as client:
        heard = listening.heard
        await listening.wait(lambda: heard.frames[-1][2] if len(heard.frames) > 20 else None,
                             timeout=15)
        # trial -1 is not counted: the first change pays once for what later ones find
        # ready (the connection, the gateway's first PATCH, a model's first swap: 50-120 ms)
        for i in range(-1, trials):
            value = CONTROLS[control][(i + 1) % 2]  # from -1: a change from the defaults
            if control == "seed":
                value = 1000 + i
            ver, t = heard.ver, time.monotonic()
            res = await client.patch(f"{url}/api/channels/{cid}", json={control: value},
                                     headers=auth)
            res.raise_for_status()
            key = NOTE_KEYS.get(control)

            def found(key=key, value=value, ver=ver, t=t) -> float | None:
                if key is not None:
                    return next((n["at"] for n in heard.notes
                                 if n["at"] >= t and n[key] == value), None)
                if control == "seed":
                    return next((n["at"] for n in heard.notes
                                 if n["at"] >= t and n["ver"] > ver), None)
                return next((w for _, v, w in reversed(heard.frames) if v > ver), None)

            when = await listening.wait(found)
            if i >= 0:
                out.append(when - t)
            await asyncio.sleep(pause)
    return out


def owner(redis, role: str, cid: str = "radio") -> str | None:
    found = redis.get(streams.lease(role, cid))
    return found.decode() if isinstance(found, bytes) else found


async def failover(url: str, redis, role: str, kill: Callable[[str], None],
                   before: float = 1.5, after: float = 3.5, cid: str = "radio",
                   min_notes: int = 0, longest: float = 6.0) -> Heard:
    """Listen, SIGKILL (through ``kill``) the replica of ``role`` that owns the channel, and
    listen on; what was heard. With ``min_notes``, listen on after ``after`` until that many
    notes were heard (at most ``longest`` s more): a slow passage of held notes can fill the
    window with one note, too few to tell a lost or repeated one."""
    async with Listening(url, cid) as listening:
        await asyncio.sleep(before)
        victim = owner(redis, role, cid)
        assert victim, f"no {role} replica owns {cid}"
        kill(victim)
        listening.heard.events.append({"type": "killed", "replica": victim,
                                       "at": time.monotonic()})
        await asyncio.sleep(after)
        more = time.monotonic() + longest
        while len(listening.heard.notes) < min_notes and time.monotonic() < more:
            await asyncio.sleep(0.1)
    return listening.heard
