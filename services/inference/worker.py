"""The inference loop: take channels by lease, keep each a lead of notes ahead of its synth.

Flow control is in beats on the channel's note timeline: the synth publishes the beat of the
last note it started; we write while our next note starts less than ``lead_seconds`` (at the
channel's BPM) after it. The synth renders seconds ahead, so a change of temperature, top-p,
seed or model does not wait for those notes: we go back to the first note that starts at least
NOTES_SPLICE_S after the clock (its network state and random state were kept), and write the notes
from there again as a new take, which the synth splices in.

A model that fails (at load, by its probe, or while sampling) is refused on every path: the
channel goes back to the model it played before, or to the default, with one error event."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from inference.models import ModelCache
from inference.settings import InferenceSettings
from playbach import streams
from playbach.modeldir import ModelError, list_models
from playbach.schemas import (
    NOTE_WAIT_S,
    NOTES_SPLICE_S,
    ChannelParams,
    ControlEntry,
    NoteEvent,
    SynthPosition,
    Take,
)
from playbach.stepmodel import HISTORY, PRIME_ON_CHANGE, Improviser
from playbach.worker import ChannelWorker

log = logging.getLogger("inference")
REPORT_EVERY_S = 1.0  # at most one error event per channel per second
MODELS_EVERY_S = 1.0  # how often the folders of the models playing are looked at
# a tick that fills a whole lead (a new take) writes what it has this often: the synth is
# waiting for the first of those notes, not for the last
FLUSH_AFTER_S = 0.02


@dataclass
class Owned:
    """A channel this replica generates."""

    cid: str
    params: ChannelParams
    improviser: Improviser
    seq: int  # of the next note
    beat: float  # where the next note starts
    beats: dict[int, float] = field(default_factory=dict)  # seq -> start beat, recent notes
    recent: deque[NoteEvent] = field(default_factory=lambda: deque(maxlen=HISTORY))
    outbox: list[NoteEvent] = field(default_factory=list)  # generated, not yet in Redis
    fallback: str | None = None  # the model played before this one
    ver: int = 0  # the take being written
    cut: float | None = None  # for the next note: where it cuts the one before (a new take)
    before: dict[int, tuple] = field(default_factory=dict)  # seq -> improviser state before it
    announced: int = 0  # the last take told to the synth (pb:takes)


class InferenceWorker(ChannelWorker[Owned]):
    role = streams.INFERENCE

    def __init__(self, redis, settings: InferenceSettings, watch=None) -> None:
        super().__init__(redis, settings, watch)
        self.settings: InferenceSettings = settings
        self.models = ModelCache(settings.models_dir, settings.model_cache)
        self.notes_written = 0
        self.reported: dict[str, float] = {}  # channel -> when its last error event went out
        self.models_seen = 0.0  # when the models' folders were last looked at (monotonic)
        self.refused: dict[str, tuple[int, int]] = {}  # model -> publication refused, told

    async def starting(self) -> None:
        """Load the published models (as many as the cache holds, the default first): the
        first listener to switch to one waits for no load (the suites' takes ~160 ms)."""
        names = list_models(self.settings.models_dir)
        default = self.settings.default_model
        for name in ([default] if default in names else []) + [n for n in names if n != default]:
            if len(self.models) >= self.settings.model_cache:
                break
            with contextlib.suppress(ModelError):  # refused when a channel asks for it
                self.models.get(name)
        log.info("models loaded: %s", ", ".join(self.models.names()) or "none")

    async def adopt(self, cid: str) -> Owned | None:
        """Take a channel over, continuing from the last notes in its stream."""
        try:
            params = await ChannelParams.read(self.redis, cid)
        except ValidationError as exc:
            await self.report(cid, f"channel cannot start: {exc}")
            return None
        if params is None:
            return None
        entries = await self.redis.xrevrange(streams.notes(cid), count=2 * HISTORY)
        recent = NoteEvent.current([NoteEvent.from_fields(f) for _, f in reversed(entries)])
        recent = recent[-HISTORY:]
        model, params = await self.usable_model(cid, params)
        if model is None:
            return None
        improviser = Improviser(model, params.temperature, params.seed,
                                history=[n.event() for n in recent], top_p=params.top_p,
                                key=recent[-1].the_key() if recent else None)
        last = recent[-1] if recent else None
        owned = Owned(cid, params, improviser,
                      seq=last.seq + 1 if last else 0,
                      beat=last.beat + last.duration if last else 0.0,
                      beats={n.seq: n.beat for n in recent}, recent=deque(recent, HISTORY),
                      ver=last.ver if last else 0)
        owned.announced = owned.ver
        log.info("channel %s: adopted at note %d (model %s)", cid, owned.seq, params.model)
        return owned

    async def usable_model(self, cid: str, params: ChannelParams, fallback: str | None = None):
        """The channel's model, or (refused, with an event) the fallback, or the default;
        with the params that name it. (None, params) if none of them works."""
        tried: dict[str, str] = {}  # model -> why it was refused
        for name in dict.fromkeys([params.model, fallback, self.settings.default_model]):
            if name is None:
                continue
            try:
                model = self.models.get(name)
            except ModelError as exc:
                tried[name] = str(exc)
                continue
            if name != params.model:
                still = "still " if name == fallback else ""
                await self.redis.hset(streams.channel(cid), "model", name)
                await self.report(cid, f"model {params.model!r} refused, {still}playing "
                                       f"{name!r}: {tried[params.model]}")
                params = params.model_copy(update={"model": name})
            return model, params
        await self.report(cid, "no model works for this channel: " + "; ".join(
            f"{name!r}: {why}" for name, why in tried.items()))
        return None, params

    async def apply(self, owned: Owned, new: ChannelParams) -> None:
        """Parameter changes take effect from the first note not yet heard (a new take); a
        model that fails keeps the old."""
        old = owned.params
        notes_change = (new.model, new.temperature, new.top_p, new.seed) != (
            old.model, old.temperature, old.top_p, old.seed)
        if notes_change:
            await self.go_back(owned)
        if new.model != old.model:
            model, new = await self.usable_model(owned.cid, new, fallback=old.model)
            if model is not None and new.model != old.model:
                owned.improviser.use(model, prime=PRIME_ON_CHANGE)
                owned.fallback = old.model
                log.info("channel %s: model %s -> %s", owned.cid, old.model, new.model)
        owned.improviser.temperature, owned.improviser.top_p = new.temperature, new.top_p
        if new.seed != old.seed and new.seed is not None:
            owned.improviser.rng = np.random.default_rng(new.seed)
        owned.params = new

    async def before_serving(self) -> None:
        """Each second, the models that channels play are looked for on disk: one
        republished (same name, new weights) is played from the next note not yet heard; one
        removed leaves its channels to the default."""
        if time.monotonic() - self.models_seen < MODELS_EVERY_S:
            return
        self.models_seen = time.monotonic()
        for name in {o.params.model for o in self.channels.values()}:
            await self.follow_model(name, [o for o in self.channels.values()
                                           if o.params.model == name])

    async def follow_model(self, name: str, users: list[Owned]) -> None:
        stamp = self.models.stamp(name)
        if stamp is None:  # removed: as a model that broke, to the default, said once
            for owned in users:
                await self.model_failed(owned, ModelError(f"model {name!r} was removed"))
            return
        try:
            model = self.models.get(name)  # the same object unless republished
        except ModelError as exc:  # republished broken: the version loaded plays on
            if self.refused.get(name) != stamp:
                self.refused[name] = stamp
                for owned in users:
                    await self.report(owned.cid, f"model {name!r} was published anew but is "
                                                 f"refused ({exc}); the version before plays on")
            return
        for owned in [o for o in users if o.improviser.model is not model]:
            await self.go_back(owned)
            owned.improviser.use(model, prime=PRIME_ON_CHANGE)
            build = model.meta.get("build_id")
            log.info("channel %s: model %s republished (build %s), playing it", owned.cid,
                     name, build)
            await ControlEntry(type="model", channel=owned.cid, data={
                "model": name, "build": build,
                "message": f"model {name} was published anew; playing it now"}).post(self.redis)

    async def model_failed(self, owned: Owned, exc: ModelError) -> None:
        """The model broke while sampling: go back to the previous model or the default."""
        bad = owned.params.model
        log.error("channel %s: model %s failed while playing: %s", owned.cid, bad, exc)
        self.models.forget(bad, str(exc))
        model, params = await self.usable_model(owned.cid, owned.params, owned.fallback)
        if model is None:
            await self.drop(owned.cid)
            return
        owned.improviser.use(model)
        owned.params, owned.fallback = params, None

    async def serve(self, cid: str, owned: Owned) -> None:
        new = await ChannelParams.read(self.redis, cid)
        if new is None:  # deleted
            await self.drop(cid)
            return
        if new != owned.params:
            await self.apply(owned, new)
        synth = await SynthPosition.read(self.redis, cid)
        for old in [q for q in owned.before if q < synth.clock_seq]:
            del owned.before[old]  # heard already: never taken back
        start = self.heard_beat(owned, synth)
        lead_beats = self.settings.lead_seconds * owned.params.bpm / 60
        began = time.monotonic()
        try:
            while owned.beat < start + lead_beats and len(owned.outbox) < 64:
                self.generate(owned)
                if time.monotonic() - began > FLUSH_AFTER_S:
                    await self.flush(owned)
                    began = time.monotonic()
                    if self.wake.is_set():
                        break  # a change came: the rest of the lead waits for it, not it
        except ModelError as exc:
            await self.model_failed(owned, exc)
        await self.flush(owned)

    @staticmethod
    def heard_beat(owned: Owned, synth: SynthPosition) -> float:
        """Where the synth is, on our timeline: the start of the note it last began, plus how
        far past that start it has rendered (a long note must not stall the next one)."""
        heard = owned.beats.get(synth.seq)
        if heard is not None:
            return heard + synth.into
        # the synth has not started this channel yet: count from our first note
        return owned.beats[min(owned.beats)] if owned.beats else owned.beat

    async def go_back(self, owned: Owned) -> None:
        """Return to the first note that starts NOTES_SPLICE_S after the synth's clock or later
        (what comes before it may have left a gateway), to write the notes from there again."""
        synth = await SynthPosition.read(self.redis, owned.cid)
        if synth.clock_seq not in owned.beats:
            return  # nothing of ours plays yet: nothing to take back
        ahead_s = NOTES_SPLICE_S + max(0.0, time.time() - synth.clock_ms / 1000)
        per_s = owned.params.bpm / 60
        cut = owned.beats[synth.clock_seq] + synth.clock_into + ahead_s * per_s
        seq = next((q for q in sorted(owned.before) if owned.beats.get(q, -1.0) >= cut), None)
        if seq is None:
            return
        owned.improviser.restore(owned.before[seq])
        owned.cut = None
        if owned.beats[seq] - cut > NOTE_WAIT_S * per_s and seq - 1 in owned.beats:
            owned.cut = cut - owned.beats[seq - 1]  # too long to wait: cut the note short
        start = owned.beats[seq] if owned.cut is None else cut
        owned.beat, owned.seq, owned.ver = start, seq, owned.ver + 1
        owned.outbox = [n for n in owned.outbox if n.seq < seq]
        while owned.recent and owned.recent[-1].seq >= seq:
            owned.recent.pop()
        for later in [q for q in owned.before if q >= seq]:
            del owned.before[later]

    def generate(self, owned: Owned) -> None:
        owned.before[owned.seq] = owned.improviser.snapshot()
        ev = owned.improviser.next()
        note = NoteEvent.of(ev, owned.seq, owned.beat, owned.params, self.settings.replica_id,
                            owned.improviser.key)
        note.ver, note.cut, owned.cut = owned.ver, owned.cut, None
        owned.outbox.append(note)
        owned.beats[owned.seq] = owned.beat
        owned.recent.append(note)
        owned.seq += 1
        owned.beat += note.duration

    async def flush(self, owned: Owned) -> None:
        """Write the generated notes; kept for the next tick if Redis fails, so none is lost."""
        if not owned.outbox:
            return
        pipe = self.redis.pipeline(transaction=False)
        for note in owned.outbox:
            pipe.xadd(streams.notes(owned.cid), note.to_fields(),
                      maxlen=self.settings.notes_maxlen, approximate=True)
        if owned.ver > owned.announced:  # the synth renders a new take now, not next tick
            Take(channel=owned.cid, ver=owned.ver).post(pipe)
        await pipe.execute()
        owned.announced = owned.ver
        self.notes_written += len(owned.outbox)
        owned.outbox.clear()
        for old in [s for s in owned.beats if s < owned.seq - 4 * HISTORY]:
            del owned.beats[old]

    async def republish(self) -> None:
        """Redis came back empty: our channels, their parameters and their last notes (so a
        replica that takes one over later continues it; the synth skips notes it has had)."""
        for cid, owned in self.channels.items():
            await owned.params.restore(self.redis, cid)
            pipe = self.redis.pipeline(transaction=False)
            for note in owned.recent:
                if note not in owned.outbox:
                    pipe.xadd(streams.notes(cid), note.to_fields(),
                              maxlen=self.settings.notes_maxlen, approximate=True)
            await pipe.execute()

    async def report(self, cid: str, message: str) -> None:
        """An error event for the channel's listeners, at most one per REPORT_EVERY_S."""
        now = time.monotonic()
        if now - self.reported.get(cid, -REPORT_EVERY_S) < REPORT_EVERY_S:
            log.warning("channel %s: %s (event suppressed: one per second)", cid, message)
            return
        self.reported[cid] = now
        log.error("channel %s: %s", cid, message)
        await ControlEntry(type="error", channel=cid,
                           data={"message": message, "source": "inference"}).post(self.redis)
