"""The live stream end to end: real redis-server, inference with the shipped model under
LiteRT, FluidSynth with FluidR3_GM, the gateway's WebSocket."""

from __future__ import annotations

import asyncio
import itertools
import re
import statistics
import struct
import time

import httpx
import numpy as np
import websockets

from playbach import streams
from playbach.schemas import DEFAULT_TOP_P
from tests.conftest import BOTH, login, run
from tests.live.client import Heard, listen

RATE = 44100


@BOTH  # on a single Redis and on a three-master cluster
def test_listener_hears_music_whose_notes_match_the_audio(live):
    url = live.gateway_url
    httpx.patch(f"{url}/api/channels/radio", json={"instrument": 13, "bpm": 120},
                headers=login(url)).raise_for_status()  # a xylophone: a sharp attack, a quick decay
    # at least 6 s and 8 notes (at most 15 s): a run of rests or held notes can fill 6 s of a
    # xylophone with little sound
    heard = run(listen(url, "radio", 15.0, until=lambda h: h.seconds() >= 6 and len(
        h.notes) >= 8))
    assert heard.hello["rate"] == RATE and heard.hello["format"] == "s16le"
    assert heard.seconds() >= 3.0, live.log("synth-1")
    assert heard.rms() > 300  # not silence
    for (pos, pcm, _), (following, _, _) in zip(heard.chunks, heard.chunks[1:], strict=False):
        assert following == pos + len(pcm)  # one gapless timeline
    start = heard.chunks[0][0]
    end = heard.chunks[-1][0] + len(heard.chunks[-1][1])
    inside = [n for n in heard.notes if start + 2048 <= n["pos"] < end - 2048]
    assert len(inside) >= 4, heard.notes
    rises = 0
    for note in inside:  # each note-on is where the piano's attack is in the PCM
        before = heard.audio_at(note["pos"] - 1024, 1024).astype(float)
        after = heard.audio_at(note["pos"], 1024).astype(float)
        rises += np.sqrt(np.mean(after**2)) > np.sqrt(np.mean(before**2))
    assert rises >= 0.7 * len(inside), f"{rises} of {len(inside)} note-ons louder than before"


def test_raising_bpm_shortens_the_spacing_of_note_ons(live):
    url, auth = live.gateway_url, login(live.gateway_url)
    httpx.patch(f"{url}/api/channels/radio", json={"bpm": 60}, headers=auth).raise_for_status()

    def spacings(heard: Heard) -> list[float]:
        """Samples per beat between consecutive note-ons."""
        notes = sorted(heard.notes, key=lambda n: n["seq"])
        return [(b["pos"] - a["pos"]) / a["beats"]
                for a, b in itertools.pairwise(notes) if b["seq"] == a["seq"] + 1]

    def enough(heard: Heard) -> bool:  # slow chorales hold notes for seconds: count, not time
        return len(spacings(heard)) >= 6

    def samples_per_beat(heard: Heard) -> float:
        assert enough(heard), f"only {len(heard.notes)} notes heard"
        return statistics.median(spacings(heard))

    async def scenario():
        slow = await listen(url, "radio", 30.0, until=enough)
        httpx.patch(f"{url}/api/channels/radio", json={"bpm": 180}, headers=auth)
        await asyncio.sleep(1.0)  # what was rendered at 60 BPM plays out
        fast = await listen(url, "radio", 20.0, until=enough)
        return slow, fast

    slow, fast = run(scenario())
    assert abs(samples_per_beat(slow) - RATE) / RATE < 0.03
    assert abs(samples_per_beat(fast) - RATE / 3) / (RATE / 3) < 0.03


@BOTH  # on a single Redis and on a three-master cluster
def test_instrument_temperature_and_top_p_changes_show_in_the_events(live):
    url, auth = live.gateway_url, login(live.gateway_url)

    async def scenario():
        heard = Heard()
        task = asyncio.create_task(listen(url, "radio", 9.0, heard))
        await asyncio.sleep(3.0)
        changed = httpx.patch(f"{url}/api/channels/radio", headers=auth,
                              json={"instrument": 19, "temperature": 0.4, "top_p": 0.8})
        assert changed.status_code == 200, changed.text
        await task
        return heard

    heard = run(scenario())
    params = [e for e in heard.events if e["type"] == "params"]
    assert params and params[-1]["params"]["instrument"] == 19
    assert params[-1]["params"]["temperature"] == 0.4
    programs = [n["program"] for n in heard.notes]
    temps = [n["temperature"] for n in heard.notes]
    assert programs[0] == 42 and programs[-1] == 19  # the cello, then the organ
    assert temps[0] == 1.0 and temps[-1] == 0.4
    assert heard.notes[0]["top_p"] == DEFAULT_TOP_P and heard.notes[-1]["top_p"] == 0.8
    assert params[-1]["params"]["top_p"] == 0.8
    first_organ = next(i for i, p in enumerate(programs) if p == 19)
    assert all(p == 19 for p in programs[first_organ:])  # once changed, never back


@BOTH  # on a single Redis and on a three-master cluster
def test_audio_test_plays_a_440_hz_tone(live):
    url = live.gateway_url

    async def scenario():
        heard = Heard()
        task = asyncio.create_task(listen(url, "radio", 5.0, heard))
        await asyncio.sleep(2.0)
        tone = httpx.post(f"{url}/api/channels/radio/tone", headers=login(url))
        assert tone.status_code == 202
        await task
        return heard

    heard = run(scenario())
    pcm = heard.pcm.astype(float)
    best = 0.0
    for start in range(0, len(pcm) - RATE // 4, RATE // 8):  # find the tone's quarter second
        window = pcm[start:start + RATE // 4]
        spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
        peak = np.fft.rfftfreq(len(window), 1 / RATE)[spectrum.argmax()]
        if abs(peak - 440) < 5:
            best = max(best, spectrum.max() / spectrum.sum())
    assert best > 0.2, "no clean 440 Hz tone in what was heard"


def test_wav_stream_for_vlc(live):
    with httpx.stream("GET", f"{live.gateway_url}/stream/radio.wav", timeout=10) as res:
        assert res.status_code == 200 and res.headers["content-type"] == "audio/wav"
        data = b""
        for part in res.iter_bytes():
            data += part
            if len(data) > 44 + RATE * 2 * 3:  # the header and three seconds of audio
                break
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    # three seconds: one can fall in a rest the model wrote
    pcm = np.frombuffer(data[44:44 + RATE * 2 * 3], np.int16)
    assert np.sqrt(np.mean(pcm.astype(float) ** 2)) > 100


def test_rapid_reconnects_always_get_audio(live):
    """A listener joining while the last one leaves once got a hub being stopped: silence."""
    url = live.gateway_url.replace("http://", "ws://") + "/ws/radio"

    async def hop() -> float:
        """Seconds from connecting to the first audio. Leaving is not timed: on a busy machine
        the close handshake waits its turn behind the audio already on the way."""
        import websockets

        start = asyncio.get_running_loop().time()
        async with websockets.connect(url, max_size=2**22, close_timeout=2) as ws:
            while not isinstance(await ws.recv(), bytes):
                pass
            return asyncio.get_running_loop().time() - start

    async def scenario() -> list[float]:
        await asyncio.wait_for(hop(), 20)  # the channel starts
        return [await asyncio.wait_for(hop(), 15) for _ in range(30)]

    times = run(scenario())
    assert max(times) < 1.0, f"a reconnect waited {max(times):.2f} s for audio"


def test_one_sample_rate_setting_is_followed_by_hello_wav_and_audio(services):
    """SAMPLE_RATE set once for the deployment: the synth renders at it, the hello message
    and the WAV header announce it (the player resamples from what the hello says)."""
    services.env.update(SAMPLE_RATE="22050", CHUNK_FRAMES="1024")
    url = services.gateway()
    services.start("inference-1", "inference")
    services.start("synth-1", "synth")
    heard = run(listen(url, "radio", 6.0))
    assert heard.hello["rate"] == 22050
    lengths = {len(pcm) for _, pcm, _ in heard.chunks}
    assert lengths == {1024}, lengths
    # real-time pacing at the announced rate: the positions advance 22,050 a second
    (p0, _, t0), (p1, _, t1) = heard.chunks[len(heard.chunks) // 3], heard.chunks[-1]
    assert abs((p1 - p0) / (t1 - t0) / 22050 - 1) < 0.25
    with httpx.stream("GET", f"{url}/stream/radio.wav", timeout=10) as res:
        header = next(res.iter_bytes(44))[:44]
    assert int.from_bytes(header[24:28], "little") == 22050


@BOTH  # on a single Redis and on a three-master cluster
def test_recent_midi_matches_the_wav_through_tempo_and_instrument_changes(live, tmp_path):
    """BPM and instrument changed while playing: recent.mid has both tempi and both
    programs, and lasts as long as recent.wav of the same window (it held one tempo and one
    program before: 12.5 s of MIDI for 17.3 s of audio)."""
    import mido

    url, auth = live.gateway_url, login(live.gateway_url)
    res = httpx.patch(f"{url}/api/channels/radio", json={"bpm": 84, "instrument": 42},
                      headers=auth)
    assert res.status_code == 200
    run(listen(url, "radio", 5.0))  # playing at 84 on a cello
    res = httpx.patch(f"{url}/api/channels/radio", json={"bpm": 160, "instrument": 40},
                      headers=auth)
    assert res.status_code == 200
    heard = run(listen(url, "radio", 20.0, until=lambda h: any(n.get("program") == 40
                                                                for n in h.notes)))
    assert any(n.get("program") == 40 for n in heard.notes), "the change was never heard"
    run(listen(url, "radio", 3.0))  # and a little more of it
    window = {"seconds": 60}

    def wav_seconds() -> float:
        wav = httpx.get(f"{url}/api/channels/radio/recent.wav", params=window, timeout=30)
        assert wav.status_code == 200
        return (len(wav.content) - 44) / 2 / int.from_bytes(wav.content[24:28], "little")

    # the channel plays on between the downloads: the MIDI's window lies between the WAVs'
    before = wav_seconds()
    mid = httpx.get(f"{url}/api/channels/radio/recent.mid", params=window, timeout=30)
    after = wav_seconds()
    assert mid.status_code == 200
    path = tmp_path / "recent.mid"
    path.write_bytes(mid.content)
    midi = mido.MidiFile(path)
    msgs = list(midi.tracks[0])
    tempi = {round(mido.tempo2bpm(m.tempo)) for m in msgs if m.type == "set_tempo"}
    programs = [m.program for m in msgs if m.type == "program_change"]
    assert {84, 160} <= tempi, tempi
    assert programs[0] == 42 and programs[-1] == 40, programs
    assert before - 0.01 <= midi.length <= after + 0.01, (before, midi.length, after)


def test_waking_an_idle_channel_plays_no_stale_audio(live, redis):
    """A listener who wakes a channel nobody heard for a while hears it resume, not first a
    fragment of the last session followed by a cut to silence (the gateway's backlog held
    the stream's old tail)."""
    url = live.gateway_url
    assert run(listen(url, "radio", 4.0)).rms() > 100  # it plays
    deadline = time.monotonic() + 30
    before = None
    while time.monotonic() < deadline:  # nobody listens: paused after IDLE_MS (3 s here)
        time.sleep(1.0)
        pos = int(redis.hget(streams.synth_position("radio"), "pos") or 0)
        if pos == before:
            break
        before = pos
    assert pos == before, "the channel did not pause"
    heard = run(listen(url, "radio", 6.0))
    assert heard.chunks, "it did not resume"
    (p0, _, t0), rate = heard.chunks[0], heard.hello["rate"]
    for (p, pcm, _), (following, _, _) in itertools.pairwise(heard.chunks):
        assert following == p + len(pcm), "a gap in the timeline"
    # Each chunk arrives in time for a player that began with the first one and buffers
    # 0.3 s: what it got first goes on (the lead of the last session, on the same clock),
    # with no cut to silence.
    late = [(p - p0) / rate - (when - t0) for p, _, when in heard.chunks]
    assert min(late) > -0.3, f"a chunk came {-min(late):.2f} s after it was due"


def test_ogg_opus_and_mp3_streams_encoded_once_with_icy_titles(live):
    """Two Ogg Opus listeners and two MP3 listeners, one asking for ICY metadata, at once: each
    stream decodes (FFmpeg, through PyAV) to the music at 96 kbps or less, the Ogg one is
    encoded once for both, and the MP3 one names the model and the note that starts."""
    import io

    import av

    url = live.gateway_url

    async def fetch(path: str, seconds: float, headers=None) -> tuple[bytes, dict]:
        data = b""
        async with httpx.AsyncClient(timeout=30) as client, client.stream(
                "GET", f"{url}{path}", headers=headers or {}) as res:
            assert res.status_code == 200, path
            start = time.monotonic()
            async for part in res.aiter_bytes():
                data += part
                if time.monotonic() - start > seconds:
                    break
            return data, dict(res.headers)

    async def encoders_while_listening() -> str:
        await asyncio.sleep(2.0)
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{url}/metrics")).text

    async def opus_packets() -> list[bytes]:  # the browser player's stream: WebSocket frames
        async with websockets.connect(url.replace("http://", "ws://") + "/ws/radio?codec=opus",
                                      max_size=2**22) as ws:
            frames, start = [], time.monotonic()
            while time.monotonic() - start < 4:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    frames.append(msg)
            return frames

    async def scenario():
        return await asyncio.gather(
            fetch("/stream/radio.ogg", 5), fetch("/stream/radio.ogg", 5),
            fetch("/stream/radio.mp3", 5, {"Icy-MetaData": "1"}), encoders_while_listening(),
            opus_packets(), opus_packets(), fetch("/stream/radio.mp3", 5))

    ogg_a, ogg_b, (mp3, headers), metrics_text, packets, _, (plain, _) = run(scenario())

    def decode(data: bytes) -> tuple[str, int, np.ndarray]:
        with av.open(io.BytesIO(data)) as container:
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
            ctx = container.streams.audio[0].codec_context
            return ctx.name, ctx.sample_rate, pcm

    for data, _ in (ogg_a, ogg_b):
        codec, rate, pcm = decode(data)
        seconds = len(pcm) / rate
        assert codec == "opus" and rate == 48000 and seconds > 2.5
        assert np.sqrt(np.mean(pcm.astype(float) ** 2)) > 0.003  # music, not silence
        assert len(data) * 8 / seconds <= 96_000 * 1.05, f"{len(data) * 8 / seconds:.0f} bps"
    assert 'playbach_encoders{format="ogg"} 1.0' in metrics_text  # once, for both listeners
    assert 'playbach_encoders{format="opus"} 1.0' in metrics_text
    # the player's frames, one a chunk: consecutive 20 ms packets at 48 kHz positions,
    # each decodable
    positions, payloads = [], []
    for f in packets:
        at, off = struct.unpack_from("<QI", f)[0], 12
        while off < len(f):
            (size,) = struct.unpack_from("<H", f, off)
            positions.append(at)
            payloads.append(f[off + 2:off + 2 + size])
            at, off = at + 960, off + 2 + size
    assert len(packets) > 60 and len(payloads) > 2 * len(packets) - 5
    assert all(b - a == 960 for a, b in itertools.pairwise(positions))
    decoder = av.CodecContext.create("libopus", "r")
    decoded = sum(frame.samples for p in payloads for frame in decoder.decode(av.Packet(p)))
    assert decoded == 960 * len(payloads)

    interval, audio, titles, i = int(headers["icy-metaint"]), b"", [], 0
    while i < len(mp3):  # take the ICY blocks out of the MP3 bytes
        audio, i = audio + mp3[i:i + interval], i + interval
        if i < len(mp3):
            size = mp3[i] * 16
            titles.append(mp3[i + 1:i + 1 + size].rstrip(b"\0").decode())
            i += 1 + size
    # the same MP3 without titles: the bytes the hub writes to every such listener at once
    for data in (audio, plain):
        codec, rate, pcm = decode(data)
        assert codec.startswith("mp3") and len(pcm) / rate > 2.5
        assert len(data) * 8 / (len(pcm) / rate) <= 96_000 * 1.05
    # a stable title: said first, again only when the channel, model, instrument, key or BPM
    # changes (then the key, heard with the first notes), never with every note
    said = [t for t in titles if t]
    assert said and said[0].startswith("StreamTitle='Play Bach: Radio · cello-suites · Cello · "), \
        titles
    assert len(titles) >= 3 and len(said) <= 2, titles
    assert any(re.search(r" · [A-G]\S* (major|minor) · \d+ BPM';$", t) for t in said), said
