"""Messages between the services: channel parameters, note events, audio chunks, control
entries and the synth's position.

Each has a flat Redis-stream form (``to_fields`` / ``from_fields``) and a JSON form for
browsers. Ranges live here once; the gateway's 422 messages quote them."""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from playbach.keys import Key
from playbach.streams import CHANNELS, CONTROL, PUBLIC, TAKES, synth_position, text
from playbach.streams import channel as channel_key
from playbach.streams import owned as owned_key
from playbach.vocab import Event

BPM = (40, 240)
TEMPERATURE = (0.1, 3.0)
TOP_P = (0.05, 1.0)
# Nucleus sampling by default: the last 5% of each step's probability is the long tail of
# unlikely notes (each one sensible alone) that, drawn again and again, takes the music out
# of key (Holtzman et al. 2020 found the same of text). At 1.0 the models' improvisations
# wander (evaluate: README, "Like Bach?"); 0.95 keeps them like Bach's. 1.0 stays a choice.
DEFAULT_TOP_P = 0.95
SAMPLE_RATE = 44100  # the default of the SAMPLE_RATE setting (playbach/settings.py)
CHUNK_FRAMES = 2048  # the default of CHUNK_FRAMES: 46 ms of audio per frame at 44.1 kHz
AUDIO_CHANNELS = 1  # mono: the instrument is one voice; half the bandwidth of stereo
MODEL_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"

# The live timeline. The synth renders LEAD_S ahead of the clock, so a replica that dies is
# covered while its lease moves (1.5 s); gateways send each frame SEND_AHEAD_S before it is
# due, with the frames due within COALESCE_S after it in the same write (a write to a socket
# is most of what a listener costs: two chunks a write halve it). A change is spliced in at
# the first chunk boundary that is at least SPLICE_S after the clock (what may have been sent,
# and 30 ms to render and write: the audio there has not left a gateway; if it has, players
# replace it), and a change of notes at the first note that starts NOTES_SPLICE_S after it
# (inference decides; the synth hears of it a tick later, and rounds up to a chunk boundary).
LEAD_S = 3.0
SEND_AHEAD_S = 0.05
COALESCE_S = 0.05
SPLICE_S = SEND_AHEAD_S + COALESCE_S + 0.03
NOTES_SPLICE_S = SPLICE_S + 0.07
NOTE_WAIT_S = 0.05  # a change of notes waits this long for the next note, else cuts one short

ModelName = Annotated[str, Field(pattern=MODEL_PATTERN, description="a model in MODELS_DIR")]
Program = Annotated[int, Field(ge=0, le=127, description="General MIDI program 0-127")]
Bpm = Annotated[float, Field(ge=BPM[0], le=BPM[1], description="beats per minute, 40-240")]
Temperature = Annotated[float, Field(ge=TEMPERATURE[0], le=TEMPERATURE[1],
                                     description="sampling temperature, 0.1-3.0")]
TopP = Annotated[float, Field(ge=TOP_P[0], le=TOP_P[1],
                              description="nucleus sampling: draw each pitch only from the "
                                          "likeliest that make up this share, 0.05-1.0 (1: "
                                          "all); durations are drawn from all")]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="random seed, 0-4294967295")]
NAME_LENGTH = 60
ChannelName = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH,
                                   pattern=r"^[^\x00-\x1f\x7f]+$",
                                   description="the name players show, 1-60 printable "
                                               "characters")]


def _text(fields: dict, key: str) -> str:
    """A stream entry's field, whether the entry's keys are bytes or text."""
    return text(fields[key.encode()] if key.encode() in fields else fields[key])


T = TypeVar("T", "NoteEvent", "AudioChunk")


def newest_takes(items: list[T], start: Callable[[T], int], end: Callable[[T], int]) -> list[T]:
    """Items of a stream in the order written, as a reader should take them: an item of a
    newer take (``ver``) replaces those from its ``start`` on; one of an older take, written
    late by a replica that had lost the channel, and the same take again (re-published after
    Redis lost its data) are skipped."""
    out: list[T] = []
    for item in items:
        if out and item.ver < out[-1].ver:
            continue
        if out and item.ver > out[-1].ver:
            while out and start(out[-1]) >= start(item):
                out.pop()
        if out and start(item) < end(out[-1]):
            continue
        out.append(item)
    return out


DEFAULT_MODEL = "cello-suites"  # the radio plays the suites the original project grew from,
DEFAULT_PROGRAM = 42  # on a Cello, as it did


class ChannelParams(BaseModel):
    """What a channel plays. Every service reads these from ``pb:channel:<id>``."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName = DEFAULT_MODEL
    instrument: Program = DEFAULT_PROGRAM
    bpm: Bpm = 84
    temperature: Temperature = 1.0
    top_p: TopP = DEFAULT_TOP_P
    seed: Seed | None = None
    name: ChannelName | None = None

    def to_fields(self) -> dict[str, str]:
        return {k: ("" if v is None else str(v)) for k, v in self.model_dump().items()}

    @classmethod
    async def read(cls, redis, cid: str) -> ChannelParams | None:
        """The channel's parameters from ``pb:channel:<id>``, or None if it does not exist."""
        fields = await redis.hgetall(channel_key(cid))
        return cls.from_fields(fields) if fields else None

    async def restore(self, redis, cid: str) -> None:
        """Put the channel back after Redis lost its data, without overwriting a newer change
        (HSETNX: only fields that are missing are written)."""
        pipe = redis.pipeline(transaction=False)
        pipe.sadd(CHANNELS, cid)
        for key, value in self.to_fields().items():
            pipe.hsetnx(channel_key(cid), key, value)
        await pipe.execute()

    @classmethod
    def from_fields(cls, fields: dict) -> ChannelParams:
        raw = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes)
               else v) for k, v in fields.items()}
        return cls(**{k: v for k, v in raw.items() if k in cls.model_fields and v != ""})


class ChannelAccess(BaseModel):
    """Who may change a channel and who sees it listed: two fields of ``pb:channel:<id>``
    beside the parameters (services that play the channel read neither). A private channel
    is heard by whoever has its link (its id is unguessable) and listed only to its owner
    and the admin; a public one is listed to everyone (``pb:public``)."""

    owner: str | None = None  # the user who made it; None: the admin's (the shared radio)
    public: bool = False

    def to_fields(self) -> dict[str, str]:
        return {"owner": self.owner or "", "public": "1" if self.public else "0"}

    @classmethod
    def from_fields(cls, fields: dict) -> ChannelAccess:
        owner = fields.get(b"owner", fields.get("owner"))
        public = fields.get(b"public", fields.get("public"))
        return cls(owner=text(owner) or None, public=text(public) == "1")

    def index(self, redis, cid: str) -> None:
        """Queue, on a pipeline, the sets that list the channel: ``pb:public`` and its
        owner's ``pb:owned``."""
        if self.public:
            redis.sadd(PUBLIC, cid)
        else:
            redis.srem(PUBLIC, cid)
        if self.owner:
            redis.sadd(owned_key(self.owner), cid)

    async def restore(self, redis, cid: str) -> None:
        """Put it back after Redis lost its data, without overwriting a newer change."""
        pipe = redis.pipeline(transaction=False)
        for key, value in self.to_fields().items():
            pipe.hsetnx(channel_key(cid), key, value)
        await pipe.execute()
        current = ChannelAccess.from_fields(await redis.hgetall(channel_key(cid)))
        pipe = redis.pipeline(transaction=False)
        current.index(pipe, cid)
        await pipe.execute()


class ChannelUpdate(BaseModel):
    """A change while playing: any subset of the parameters."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName | None = None
    instrument: Program | None = None
    bpm: Bpm | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Seed | None = None
    name: ChannelName | None = None


class NoteEvent(BaseModel):
    """One improvised event on a channel's timeline (``beat`` is where it starts)."""

    seq: int
    beat: float
    pitch: str
    midi: list[int]
    duration: float  # quarter lengths (beats)
    velocity: int
    model: str
    temperature: float
    top_p: float = 1.0
    replica: str = ""  # the inference replica that wrote it
    # The take: inference re-writes the notes from ``seq`` on with a higher one when a change
    # of notes (temperature, model, ...) is spliced in; the newest take of a seq counts.
    ver: int = 0
    # Set on the first note of a take that begins mid-note: it starts this many beats after
    # the previous note's start, cutting that note short (a change is not kept waiting for a
    # long note to end). None: it starts where the previous note ends.
    cut: float | None = None
    # The key the model improvises in (playbach.keys: anchor, mode), so a replica taking the
    # channel over goes on in it; empty for a model that knows no keys.
    key: list[int] = Field(default_factory=list, max_length=2)

    @classmethod
    def of(cls, ev: Event, seq: int, beat: float, params: ChannelParams,
           replica: str = "", key: Key | None = None) -> NoteEvent:
        return cls(seq=seq, beat=beat, pitch=ev.pitch, midi=list(ev.midi),
                   duration=float(ev.duration), velocity=ev.midi_velocity, model=params.model,
                   temperature=params.temperature, top_p=params.top_p, replica=replica,
                   key=key.as_list() if key else [])

    def the_key(self) -> Key | None:
        try:
            return Key(*self.key) if len(self.key) == 2 else None
        except ValueError:
            return None

    @staticmethod
    def current(notes: list[NoteEvent]) -> list[NoteEvent]:
        """A stream's notes in order, each re-take replacing the notes from its seq on."""
        return newest_takes(notes, lambda n: n.seq, lambda n: n.seq + 1)

    def event(self) -> Event:
        from playbach.vocab import dynamic

        return Event(self.pitch, Fraction(self.duration).limit_denominator(96),
                     dynamic(self.velocity))

    def to_fields(self) -> dict[str, str]:
        return {"type": "note", "json": self.model_dump_json()}

    @classmethod
    def from_fields(cls, fields: dict) -> NoteEvent:
        return cls.model_validate_json(_text(fields, "json"))


class NoteOn(BaseModel):
    """A note-on inside an audio chunk, at ``offset`` frames from the chunk's start."""

    offset: int
    seq: int
    pitch: str
    midi: list[int]
    velocity: int
    duration: float  # seconds, at the BPM it was rendered with
    beats: float  # its length in beats
    program: int  # the GM program it sounds with
    model: str
    temperature: float
    top_p: float = 1.0
    key: str = ""  # the key it was improvised in ("G major"), for the player to show


class AudioChunk(BaseModel):
    """``frames`` of s16le PCM starting at sample ``pos`` of the channel's timeline."""

    pos: int
    rate: int = SAMPLE_RATE
    channels: int = AUDIO_CHANNELS
    pcm: bytes = b""
    notes: list[NoteOn] = []
    tone: bool = False  # the audio test's known tone, not music
    # The take: a chunk of a higher one replaces the audio from its ``pos`` on (a splice).
    ver: int = 0
    due: float = 0.0  # when its first sample plays on the channel's clock (epoch ms)

    @property
    def frames(self) -> int:
        return len(self.pcm) // (2 * self.channels)

    def to_fields(self) -> dict[str, Any]:
        return {"pos": self.pos, "rate": self.rate, "ch": self.channels, "pcm": self.pcm,
                "tone": int(self.tone), "ver": self.ver, "due": self.due,
                "notes": json.dumps([n.model_dump() for n in self.notes])}

    @staticmethod
    def current(chunks: list[AudioChunk]) -> list[AudioChunk]:
        """A stream's chunks in order, each new take replacing the audio from its pos on."""
        return newest_takes(chunks, lambda c: c.pos, lambda c: c.pos + c.frames)

    @classmethod
    def from_fields(cls, fields: dict) -> AudioChunk:
        return cls(pos=int(_text(fields, "pos")), rate=int(_text(fields, "rate")),
                   channels=int(_text(fields, "ch")),
                   pcm=fields.get(b"pcm", fields.get("pcm", b"")),
                   tone=_text(fields, "tone") == "1",
                   ver=int(_text(fields, "ver") if "ver" in fields or b"ver" in fields else 0),
                   due=float(_text(fields, "due") if "due" in fields or b"due" in fields
                             else 0),
                   notes=[NoteOn(**n) for n in json.loads(_text(fields, "notes"))])


class ControlEntry(BaseModel):
    """An entry of ``pb:control``, the one shape every writer uses: a channel's parameters
    changed (``params``), an audio test tone asked for (``tone``), an ``error`` to tell its
    listeners, or its ``model`` was published anew and now plays (``model``, ``build``,
    ``message``). Gateways pass each to the channel's listeners as :meth:`event`."""

    type: Literal["params", "tone", "error", "model"]
    channel: str
    data: dict[str, Any] = {}

    def to_fields(self) -> dict[str, str]:
        return {"type": self.type, "channel": self.channel, "json": json.dumps(self.data)}

    @classmethod
    def from_fields(cls, fields: dict) -> ControlEntry:
        return cls(type=_text(fields, "type"), channel=_text(fields, "channel"),
                   data=json.loads(_text(fields, "json")))

    def event(self) -> dict[str, Any]:
        """As listeners get it: {"type": ..., "channel": ..., **data}."""
        return {**self.data, "type": self.type, "channel": self.channel}

    def post(self, redis):  # a client or a pipeline: awaited by the caller if a client
        return redis.xadd(CONTROL, self.to_fields(), maxlen=1000, approximate=True)


class Take(BaseModel):
    """An entry of ``pb:takes``: the inference owner of ``channel`` took its notes back from
    some note on and began writing them again as take ``ver`` (a change of temperature, top-p,
    seed or model). Its synth renders them at once instead of at its next tick: the change is
    heard NOTES_SPLICE_S after it was made only if the new take is spliced in before then."""

    channel: str
    ver: int

    def to_fields(self) -> dict[str, str]:
        return {"channel": self.channel, "ver": str(self.ver)}

    @classmethod
    def from_fields(cls, fields: dict) -> Take:
        return cls(channel=_text(fields, "channel"), ver=int(_text(fields, "ver")))

    def post(self, redis):  # a client or a pipeline: awaited by the caller if a client
        return redis.xadd(TAKES, self.to_fields(), maxlen=1000, approximate=True)


class SynthPosition(BaseModel):
    """``pb:synth:<id>``: where the channel's synth owner is, so a replica taking the channel
    over continues the timeline, inference keeps its lead, and stats can say how it goes."""

    pos: int = 0  # the next sample to render
    beat: float = 0.0  # the beat it is at
    seq: int = -1  # the last note it started
    id: str = "0-0"  # that note's entry id in pb:notes:<id>
    into: float = 0.0  # beats past the start of note `seq` (a long note must not stall)
    lead_ms: float = 0.0  # audio rendered ahead of the wall clock
    starved: int = 0  # chunks rendered while no note was there to play
    replica: str | None = None
    origin_ms: float = 0.0  # the channel's clock: when sample 0 played (epoch ms)
    ver: int = 0  # the audio take it renders
    # what plays at clock_ms: ``clock_into`` beats into note ``clock_seq`` (a change of
    # notes is spliced in after it)
    clock_seq: int = -1
    clock_into: float = 0.0
    clock_ms: float = 0.0

    def to_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}

    @classmethod
    async def read(cls, redis, cid: str) -> SynthPosition:
        """The stored position, or the start of a timeline if there is none."""
        saved = await redis.hgetall(synth_position(cid))
        return cls(**{text(k): text(v) for k, v in saved.items()})

    def write(self, redis, cid: str):  # a client or a pipeline
        return redis.hset(synth_position(cid), mapping=self.to_fields())


class PlayerReport(BaseModel):
    """The one message a player sends over its WebSocket: underruns since its last report.
    Anything else from a client is ignored (and each connection's count is bounded)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["underrun"]
    count: int = Field(ge=1, le=1000)
