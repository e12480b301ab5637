"""Run a published step model with LiteRT and improvise events from it. Never imports TensorFlow.

``step.tflite`` has one signature: inputs ``pitch``, ``duration``, ``velocity`` (int32 ``[1]``,
the current token ids) and ``state`` (float32 ``[1, S]``, all recurrent state packed); outputs
the logits of each head and the next ``state``. One note costs one ``invoke``.

Two kinds of model read alike. A *conditioned* model (``meta.json`` has ``keys``) holds its
key in the state, where :meth:`StepModel.initial_state` puts it (playbach.keys). A model whose
pitch is given the joining (``pitch`` of shape ``[1, 2, size]``) has pitch logits per answer
to "does this step join the chord?": row 0 no (it begins an event), row 1 yes; the duration
head says how likely ``+`` is. Older models have one row, the same for both."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from playbach.keys import KEY_SLOTS, Key, KeyTable, key_of
from playbach.modeldir import ModelError, read_meta, read_vocab
from playbach.vocab import (
    BOS_ID,
    JOIN_ID,
    MAX_CHORD,
    PITCH_OFFSET,
    REST_ID,
    Event,
    Step,
    Vocabulary,
)

HEADS = ("pitch", "duration", "velocity")
HISTORY = 64  # events kept to re-prime a new model (model change, takeover)
# steps (a note each: a chord is several) a model swapped in while a channel plays is primed
# with: a listener waits for them. Counted in steps, not events: 16 events of chorales were
# 48 steps, ~100 ms of the suites' model here and a chunk late in CI; 24 steps were up to 80
# ms on a busy machine (the suites' model, with its copy window, is ~1 ms a step). The key
# goes on.
PRIME_ON_CHANGE = 12
# The longest exact repeat (steps: pitch and duration) an improvisation may play. A network
# told how long a match with its own past is (--copy-match) learns that Bach follows a
# written-out repeat; improvising, it followed its own music round and round (the suites:
# longest exact repeat 128 notes of 256, where Bach's 256-note excerpts stay within 6-84).
# Whatever would extend a repeat past this is not drawn (as "no repeated n-gram" in text).
MAX_REPEAT = 32
RHYTHM_WARMTH = (0.5, 3.0)  # the rhythm temperatures a model may ask for (meta.json)
REPEAT_REACH = 640  # steps looked back for it at least: the pointer's 512 and more


def _interpreter(content: bytes, threads: int):  # -> ai_edge_litert Interpreter
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=content, num_threads=threads)


def last_steps(vocab: Vocabulary, events: list[Event], most: int | None) -> list[Step]:
    """The steps of the last whole events that fit in ``most`` steps (None: of all)."""
    chosen: list[list[Step]] = []
    total = 0
    for ev in reversed(events):
        steps = vocab.steps(ev)
        if most is not None and total + len(steps) > most:
            break
        chosen.append(steps)
        total += len(steps)
    return [step for steps in reversed(chosen) for step in steps]


class StepModel:
    """A loaded, checked ``step.tflite`` with its vocabulary and metadata."""

    def __init__(self, path: Path, *, quantized: bool = False, threads: int = 1) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.meta = read_meta(self.path)
        self.vocab: Vocabulary = read_vocab(self.path)
        file = self.path / ("step_int8.tflite" if quantized else "step.tflite")
        try:
            content = file.read_bytes()
            self._interp = _interpreter(content, threads)
            self._interp.allocate_tensors()
            runner = self._interp.get_signature_runner()
            inputs, outputs = runner.get_input_details(), runner.get_output_details()
        except FileNotFoundError:
            raise ModelError(f"{self.path} has no {file.name}") from None
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{file} is not a usable TFLite model: {exc}") from None
        need_in, need_out = {*HEADS, "state"}, {*HEADS, "state"}
        if set(inputs) != need_in or set(outputs) != need_out:
            raise ModelError(
                f"{file}: signature has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
                f"expected {sorted(need_in)} -> {sorted(need_out)}"
            )
        sizes = tuple(int(outputs[h]["shape"][-1]) for h in HEADS)
        if sizes != self.vocab.sizes:
            raise ModelError(
                f"{file}: head sizes {sizes} do not match vocab.json {self.vocab.sizes}")
        self.state_size = int(inputs["state"]["shape"][-1])
        self.joins = len(outputs["pitch"]["shape"]) == 3  # pitch logits per answer to "joins?"
        try:
            self.keys = KeyTable.from_meta(self.meta)
        except ValueError as exc:
            raise ModelError(f"{self.path}: {exc}") from None
        if self.keys and not 0 <= self.keys.offset <= self.state_size - KEY_SLOTS:
            raise ModelError(f"{self.path}: its key lies outside its state")
        self.range = self._range()
        self.rhythm_temperature = self._rhythm_temperature()
        low, high = (0, 127) if self.range is None else self.range
        # pitch ids of the notes the improviser never draws: outside the corpus' range
        self.outside = tuple(i for i in range(PITCH_OFFSET, self.vocab.sizes[0])
                             if not low <= i - PITCH_OFFSET <= high)
        self._in = {k: v["index"] for k, v in inputs.items()}
        self._out = {k: v["index"] for k, v in outputs.items()}

    def _rhythm_temperature(self) -> float:
        """How much warmer than the pitches the durations are drawn (``meta.json`` →
        ``sampling``, fitted by the trainer's calibrate.py; 1.0 in older models)."""
        sampling = self.meta.get("sampling") or {}
        found = sampling.get("rhythm_temperature", 1.0) if isinstance(sampling, dict) else None
        low, high = RHYTHM_WARMTH
        if isinstance(found, bool) or not isinstance(found, int | float) \
                or not low <= found <= high:
            raise ModelError(f"{self.path}: meta.json sampling.rhythm_temperature {found!r} is "
                             f"not a number from {low} to {high}")
        return float(found)

    def _range(self) -> tuple[int, int] | None:
        """The lowest and highest note of the training pieces as written (``meta.json`` →
        ``range``; None in older models): what the improviser keeps to. The network knows
        more (training moved windows into other keys, and scoring may meet any note), and
        sampled from it would take the suites below the cello's C2 and above any note of
        theirs."""
        found = self.meta.get("range")
        if found is None:
            return None
        if (not isinstance(found, list) or len(found) != 2
                or not all(isinstance(n, int) and 0 <= n <= 127 for n in found)
                or found[0] > found[1]):
            raise ModelError(f"{self.path}: meta.json range {found!r} is not [lowest, highest] "
                             "MIDI notes")
        return found[0], found[1]

    def probe(self, steps: int = 8) -> None:
        """A few greedy steps from the start: every logit and state value must be finite, or
        ModelError (a model that loads can still be broken: NaN weights, a bad export)."""
        ids, state = (0, 0, 0), self.initial_state()
        for _ in range(steps):
            logits, state = self.step(ids, state)
            if not all(np.isfinite(x).all() for x in logits) or not np.isfinite(state).all():
                raise ModelError(f"model {self.name!r} is broken: it gives non-finite (NaN or "
                                 "infinite) outputs")
            heads = (np.atleast_2d(logits[0])[0], *logits[1:])  # a new event's pitch
            ids = tuple(int(np.argmax(x[1:])) + 1 for x in heads)  # type: ignore[assignment]

    def initial_state(self, key: Key | None = None) -> np.ndarray:
        """The state before the start token: zeros, and for a conditioned model its key (by
        default the one its corpus is most often in)."""
        state = np.zeros((1, self.state_size), np.float32)
        if self.keys is not None:
            key = key or self.keys.commonest
            state[0, self.keys.offset:self.keys.offset + KEY_SLOTS] = key.as_list()
        return state

    def key_of(self, events: Iterable[Event]) -> Key | None:
        """The key of ``events`` as this model names keys (None: it knows none)."""
        return key_of(events, self.vocab.options.octaves) if self.keys is not None else None

    def step(
        self, ids: tuple[int, int, int], state: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
        """Feed one event's ids; get each head's logits for the next event, and the next state."""
        interp = self._interp
        for head, i in zip(HEADS, ids, strict=True):
            interp.set_tensor(self._in[head], np.array([i], np.int32))
        interp.set_tensor(self._in["state"], state)
        interp.invoke()
        logits = tuple(interp.get_tensor(self._out[h])[0] for h in HEADS)
        return logits, interp.get_tensor(self._out["state"])  # type: ignore[return-value]


def repeat_bans(steps: np.ndarray, length: int) -> set[int]:
    """The pitches after which the last ``length`` of ``steps`` ([n, 2]: pitch, duration)
    would be an exact repeat of ``length`` + 1 steps: those that followed the same ``length``
    steps earlier. Only the places the last step occurred are compared whole: for 640 steps,
    a tenth of the time a step of the suites' model takes (comparing every window: a quarter)."""
    n = len(steps)
    if length < 1 or n <= length:
        return set()
    ends = np.arange(length - 1, n - 1)  # where an earlier copy of the last steps may end
    ends = ends[(steps[ends] == steps[n - 1]).all(axis=1)]
    back = np.arange(length)
    same = (steps[ends[:, None] - back] == steps[n - 1 - back]).all(axis=(1, 2))
    return {int(p) for p in steps[ends[same] + 1, 0]}


class RecentSteps:
    """The last ``reach`` to ``2 * reach`` steps (pitch, duration) as one array: appended in
    place, shifted down once every ``reach`` steps."""

    def __init__(self, steps: Iterable[tuple[int, int]] = (), reach: int = REPEAT_REACH) -> None:
        self.reach, self.buf, self.n = reach, np.zeros((2 * reach, 2), np.int64), 0
        for step in steps:
            self.append(step)

    def append(self, step: tuple[int, int]) -> None:
        if self.n == len(self.buf):
            self.buf[:self.reach] = self.buf[self.n - self.reach:self.n]
            self.n = self.reach
        self.buf[self.n] = step
        self.n += 1

    @property
    def steps(self) -> np.ndarray:
        return self.buf[:self.n]


def distribution(logits: np.ndarray, temperature: float, banned: Iterable[int] = (0,),
                 top_p: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) with the banned (special) indices at zero; with ``top_p``
    < 1, only the likeliest indices whose probabilities add up to ``top_p`` keep theirs
    (nucleus sampling: the long tail of unlikely choices is cut, whatever the temperature).
    Normalised. Non-finite logits (a model gone bad on some input) raise ModelError."""
    if not np.isfinite(logits).all():
        raise ModelError("the model gave non-finite (NaN or infinite) logits")
    z = logits.astype(np.float64) / temperature
    z[list(banned)] = -np.inf
    p = np.exp(z - z.max())
    if top_p < 1.0:
        order = np.argsort(-p)
        share = np.cumsum(p[order]) / p.sum()
        p[order[np.searchsorted(share, top_p) + 1:]] = 0.0  # keep the first to reach top_p
    return p / p.sum()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def pitch_log_probs(pitch: np.ndarray, duration: np.ndarray, joins: bool) -> np.ndarray:
    """The pitch head's own distribution (log). ``joins``: the pitch logits have a row per
    answer to "does the step join the chord?" [..., 2, size], mixed by how likely the
    duration head makes ``+``."""
    if not joins:
        return log_softmax(pitch)
    join = np.minimum(log_softmax(duration)[..., JOIN_ID, None], -1e-12)
    rows = log_softmax(pitch)
    return np.logaddexp(np.log(-np.expm1(join)) + rows[..., 0, :], join + rows[..., 1, :])


def draw(p: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn from the (not necessarily normalised) probabilities ``p``."""
    cdf = np.cumsum(p)
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))


def sample(logits: np.ndarray, temperature: float, rng: np.random.Generator,
           banned: Iterable[int] = (0,), top_p: float = 1.0) -> int:
    """An index drawn from :func:`distribution`, never a banned one."""
    return draw(distribution(logits, temperature, banned, top_p), rng)


class Improviser:
    """An endless stream of events from a step model: temperature, seed, and a memory of the
    last events so a new model (or a new replica) can continue the same music. A conditioned
    model improvises in ``key``: given, else the key of the ``history`` it continues, else
    one drawn (by the seed) from the keys its corpus is in. It keeps to the range of the
    model's corpus (``StepModel.range``) unless ``any_note``."""

    def __init__(self, model: StepModel, temperature: float = 1.0, seed: int | None = None,
                 history: Iterable[Event] = (), top_p: float = 1.0,
                 key: Key | None = None, any_note: bool = False,
                 max_repeat: int | None = None, rhythm_temperature: float | None = None
                 ) -> None:
        self.temperature, self.top_p, self.any_note = temperature, top_p, any_note
        self.rhythm_temperature = rhythm_temperature  # None: the model's own
        self.max_repeat = MAX_REPEAT if max_repeat is None else max_repeat
        self.rng = np.random.default_rng(seed)
        self.history: deque[Event] = deque(maxlen=HISTORY)
        self.key = key
        self.use(model, list(history))

    def use(self, model: StepModel, history: Iterable[Event] | None = None,
            prime: int | None = None) -> None:
        """Switch to ``model``, priming it with the recent events (the last whole ones within
        ``prime`` steps; None: all) so the music goes on (in the same key, if both know keys)."""
        events = list(self.history if history is None else history)
        # the step already drawn for the next event goes on too (a swap changes no note)
        pending = getattr(self, "_pending", None) if history is None else None
        if model.keys is not None:  # the key goes on, in a register this model knows
            if self.key is None:
                self.key = model.key_of(events) if events else model.keys.draw(self.rng)
            self.key = model.keys.nearest(self.key)
        if history is not None or not hasattr(self, "_recent"):  # else the music goes on
            self._recent = RecentSteps((s[0], s[1]) for s in last_steps(model.vocab, events,
                                                                        None))
        self.model, self.history = model, deque(maxlen=HISTORY)
        self._state = model.initial_state(self.key)
        self._logits, self._state = model.step((0, 0, 0), self._state)
        self._pending: Step | None = None  # a drawn step that begins the next event
        self.history.extend(events)
        for step in last_steps(model.vocab, events, prime):
            self._logits, self._state = model.step(step, self._state)
        if pending is not None:
            self._logits, self._state = model.step(pending, self._state)
            self._pending = pending

    def snapshot(self) -> tuple:
        """Everything the next events depend on except the parameters: to go back to."""
        return (self.model, self._state.copy(), self._logits, self._pending,
                tuple(self.history), self.rng.bit_generator.state, self.key,
                self._recent.steps.copy())

    def restore(self, snapshot: tuple) -> None:
        (self.model, state, self._logits, self._pending, history, rng, self.key,
         recent) = snapshot
        self._state, self.history = state.copy(), deque(history, maxlen=HISTORY)
        self._recent = RecentSteps(map(tuple, recent))
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = rng

    def _durations(self, logits: np.ndarray, banned: tuple[int, ...]) -> np.ndarray:
        """The duration head's distribution as drawn from. Nucleus sampling cuts the pitch's
        tail only: cut from the durations too, the likeliest duration was left alone whenever
        the network was sure enough of it, and running free (feeding on its own notes) it grew
        surer, so one rhythm locked in. The durations are drawn a little warmer for the same
        reason (the model's fitted rhythm temperature; docs/music.md, bench/collapse.py)."""
        warmth = self.rhythm_temperature or self.model.rhythm_temperature
        return distribution(logits, self.temperature * warmth, banned)

    def _draw(self, allow_rest: bool, join_above: int | None) -> Step:
        """Sample one step and feed it to the model. A step may join the chord (duration
        ``+``) only with a note above ``join_above`` (a pitch id; None: nothing to join, as
        for a rest or the first note of an event), since chords are written lowest note
        first. So whether it joins is drawn first, from the duration head's p(+) times the
        pitch mass above (the pitch given that it joins, for a model that has it), against
        1 - p(+); then the pitch given the answer, and the duration if it does not join.
        (Drawing the pitch first and refusing ``+`` below it ended a chord whenever a note
        below was drawn, and a model that could not tell a chord's next note from the next
        event's first note began events in the middle of chords.)"""
        p_logits, d_logits, v_logits = self._logits
        t, top = self.temperature, self.top_p
        never = (BOS_ID,)  # the start token is input only
        outside = () if self.any_note else self.model.outside
        rows = np.atleast_2d(p_logits)  # [new event, joins] (one row: the same for both)
        banned = (*never, *outside, *(() if allow_rest else (REST_ID,)))
        again = repeat_bans(self._recent.steps, self.max_repeat)
        if len({*banned, *again}) < rows.shape[-1]:  # else (one note left) it may repeat
            banned = (*banned, *again)
        p_join = self._durations(d_logits, never)[JOIN_ID]
        above = np.zeros(rows.shape[-1])
        if join_above is not None:
            low = max(join_above, REST_ID) + 1
            above[low:] = distribution(rows[-1], t, banned, top)[low:]
        joins = p_join * above.sum()
        if self.rng.random() * (joins + 1.0 - p_join) < joins:
            pitch, duration = draw(above, self.rng), JOIN_ID
        else:  # a new event: its pitch, then its duration
            pitch = draw(distribution(rows[0], t, banned, top), self.rng)
            duration = draw(self._durations(d_logits, (*never, JOIN_ID)), self.rng)
        step = (pitch, duration, sample(v_logits, t, self.rng, never))
        self._logits, self._state = self.model.step(step, self._state)
        self._recent.append((pitch, duration))
        return step

    def next(self, allow_rest: bool = True) -> Event:
        """The next event: a rest, a note, or a chord of the notes drawn joined to it. The step
        after it is drawn too (to know the chord ended), and begins the next event."""
        first = self._pending or self._draw(allow_rest, join_above=None)
        chord = [first]
        while True:
            can = first[0] != REST_ID and len(chord) < MAX_CHORD
            # without octaves a chord is in normal order, which may turn round: any note joins
            above = chord[-1][0] if self.model.vocab.options.octaves else REST_ID
            step = self._draw(True, join_above=above if can else None)
            if step[1] != JOIN_ID:
                break
            chord.append(step)
        self._pending = step
        ev = self.model.vocab.event(chord)
        self.history.append(ev)
        return ev

    def notes(self, count: int, max_rests: int = 4) -> Iterator[Event]:
        """Events until ``count`` of them sound; long runs of rests are cut to ``max_rests``."""
        sounding, rests = 0, 0
        while sounding < count:
            ev = self.next(allow_rest=rests < max_rests)
            rests = rests + 1 if ev.is_rest else 0
            sounding += not ev.is_rest
            yield ev
