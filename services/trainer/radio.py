"""`judge --radio URL`: what a running stack's channels actually played, judged.

It makes channels of its own on the gateway (a guest session's: private, each with its own
seed, the model judged, at the channel defaults unless told), listens to each over its
WebSocket for the minutes asked, downloads what each played as its ``recent.mid`` (the
note-ons in the audio, as a listener heard them), and judges those notes as `judge` judges
improvisations, against the model's held-out pieces. The channels are deleted after."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from playbach.midifile import file_events
from playbach.vocab import Event
from trainer import judge as judging
from trainer.config import UserError

MAX_SECONDS = 600  # what recent.mid reaches back


async def _keep_listening(url: str, cid: str, seconds: float) -> None:
    """A listener on the channel: channels nobody hears stop costing anything, and play
    nothing."""
    import websockets

    ws_url = url.replace("http://", "ws://").replace("https://", "wss://") + f"/ws/{cid}"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, websockets.ConnectionClosed, TimeoutError):
            async with websockets.connect(ws_url, max_size=2**22) as ws:
                while time.monotonic() < deadline:
                    await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.1))
        await asyncio.sleep(0.5)


def record_channels(url: str, model: str, minutes: float, channels: int, temperature: float,
                    top_p: float, seed: int) -> list[list[Event]]:
    """What ``channels`` new channels of ``model`` played over ``minutes``, as events."""
    seconds = minutes * 60
    if not 0 < seconds <= MAX_SECONDS:
        raise UserError(f"--minutes must be above 0 and at most {MAX_SECONDS // 60}")
    with httpx.Client(base_url=url.rstrip("/"), timeout=30) as http:
        res = http.post("/api/guest")
        if res.status_code != 201:
            raise UserError(f"{url}: no guest session ({res.status_code}: {res.text[:200]})")
        http.headers["Authorization"] = f"Bearer {res.json()['token']}"
        made = []
        try:
            for i in range(channels):
                res = http.post("/api/channels", json={
                    "model": model, "temperature": temperature, "top_p": top_p,
                    "seed": seed + i, "name": f"judge {seed + i}"})
                if res.status_code != 201:
                    raise UserError(f"{url}: cannot make a channel of {model!r} "
                                    f"({res.status_code}: {res.text[:200]})")
                made.append(res.json()["id"])

            async def listen_all() -> None:
                await asyncio.gather(*(_keep_listening(url, cid, seconds) for cid in made))

            asyncio.run(listen_all())
            played = []
            for cid in made:
                res = http.get(f"/api/channels/{cid}/recent.mid", params={"seconds": seconds})
                if res.status_code == 200:
                    played.append(file_events(res.content))
            return played
        finally:
            for cid in made:
                with contextlib.suppress(httpx.HTTPError):
                    http.delete(f"/api/channels/{cid}")


def listen_and_judge(url: str, held: list[judging.Held], minutes: float, channels: int,
                     lengths: list[int] | None, temperature: float, top_p: float,
                     seed: int) -> dict:
    model = held[0].folder.name
    played = record_channels(url, model, minutes, channels, temperature, top_p, seed)
    bach = [p for h in held for p in h.bach]
    heard = sum(sum(not e.is_rest for e in p) for p in played)
    chosen = [n for n in judging.lengths_for(bach, lengths)
              if any(sum(not e.is_rest for e in p) >= n for p in played)]
    if not chosen:
        raise UserError(f"the channels played {heard} notes in all, too few for an excerpt: "
                        "listen longer (--minutes) or ask for shorter ones (--notes)")
    result: dict = {"radio": url, "models": [model], "channels": channels, "minutes": minutes,
                    "temperature": temperature, "top_p": top_p, "seed": seed,
                    "pieces": channels, "notes_heard": heard, "bach_pieces": len(bach),
                    "lengths": {}}
    for n in chosen:
        mine = [e for p in played for e in judging.ms.excerpts([p], n)]
        result["lengths"][str(n)] = {"network": judging.judge_excerpts(
            mine, [e for e in judging.ms.excerpts(bach, n)], seed)}
    return result
