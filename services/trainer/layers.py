"""The network's layers (``model.build_model`` puts them together; the step function calls the
same ones): the inputs of a step, the heads, the pointer that copies from the past, the
joining's shift and the key prior. Registered for ``.keras`` files as ``playbach>Name``."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from playbach.stepmodel import HEADS
from playbach.vocab import MAX_CHORD, PITCH_OFFSET
from trainer.dataset import INTERVALS

SPAN = 2 * INTERVALS + 1  # intervals the relative head and the pointer tell apart
TONIC_SPAN = 2 * 36 + 1  # intervals from the key's tonic the key prior tells apart: 3 octaves
NEVER = -1e9  # a logit no softmax picks
# The pointer's match bias starts at MATCH_STEP per matched step (16 steps: 8, most of the
# mass on the match) and learns MATCH_SCALE times as fast as a plain weight: from zero, the
# suites' 400 optimizer steps moved it by less than 1.
MATCH_STEP, MATCH_SCALE = 0.5, 8.0


def by_interval(values, last, size: int):
    """``values`` [..., span] indexed by interval (the middle one is 0) -> [..., size] indexed
    by pitch id: pitch id ``i`` takes the value of its interval from ``last`` (MIDI, -1 for
    none); ``valid`` says which ids are within reach (a note, with a last note, at most
    span // 2 away)."""
    span = values.shape[-1]
    notes = ops.arange(size) - PITCH_OFFSET
    diff = notes - ops.expand_dims(last, -1) + span // 2
    valid = (notes >= 0) & (ops.expand_dims(last, -1) >= 0) & (diff >= 0) & (diff < span)
    return ops.take_along_axis(values, ops.clip(diff, 0, span - 1), axis=-1), valid


@keras.saving.register_keras_serializable("playbach")
class KeyPrior(layers.Layer):
    """What the key says of the next note given the last one: a learned logit per mode, per
    place in the chord the note takes, per interval of the last note from the tonic (the
    anchor, see playbach.keys) and per interval of the next one from it. A bigram of pitches
    relative to the tonic: the scale's degrees, how they follow one another (the leading note
    rises) and the piece's register (high above the tonic, the line turns down), in any key.
    It is added to the whole network's log-probabilities (a product of experts) and reads
    nothing else of the music so far: told the key and the LSTM's state, a head learnt the
    suites' 20 training movements by heart (in the key's terms a transposed window is the same
    window, so augmentation no longer stopped it; held-out pitch fell from 41.6% to 25.6%)."""

    def build(self, input_shape) -> None:
        self.table = self.add_weight(shape=(2 * MAX_CHORD * (TONIC_SPAN + 1), TONIC_SPAN),
                                     initializer=Distant(), name="table")

    def call(self, logits, anchor, mode, place, last):
        anchor, last = ops.cast(anchor, "int32"), ops.cast(last, "int32")
        half = TONIC_SPAN // 2
        before = ops.where(last >= 0, ops.clip(last - anchor + half, 0, TONIC_SPAN - 1),
                           TONIC_SPAN)  # TONIC_SPAN: no note yet
        row = (ops.cast(mode, "int32") * MAX_CHORD + ops.cast(place, "int32")) * (
            TONIC_SPAN + 1) + before
        notes = ops.arange(logits.shape[-1]) - PITCH_OFFSET
        at = ops.clip(notes - ops.expand_dims(anchor, -1) + half, 0, TONIC_SPAN - 1)
        rel = ops.take_along_axis(ops.take(self.table, row, axis=0), at, axis=-1)
        return logits + ops.where(notes >= 0, rel, 0.0)  # a note further off: the edge's


@keras.saving.register_keras_serializable("playbach")
class Distant(keras.initializers.Initializer):
    """KeyPrior's start: a note is less likely the further it lies from the tonic (-0.5 at an
    octave, -4.5 at three and beyond). Training moves what the music shows; a register it
    never reached keeps the doubt (from zeros, a sampled run climbed three octaves)."""

    def __call__(self, shape, dtype=None):
        half = shape[-1] // 2
        row = -0.5 * (np.arange(-half, half + 1) / 12.0) ** 2
        return ops.convert_to_tensor(np.broadcast_to(row, shape), dtype=dtype or "float32")


@keras.saving.register_keras_serializable("playbach")
class Joins(layers.Layer):
    """x + a learned vector for "this step joins a chord" or "it begins an event": what the
    pitch heads read (zero at first, so a network without it starts the same)."""

    def build(self, input_shape) -> None:
        self.shift = self.add_weight(shape=(2, input_shape[-1]), initializer="zeros",
                                     name="shift")

    def call(self, x, joins):
        return x + ops.take(self.shift, ops.cast(joins, "int32"), axis=0)


PROFILE_FEATURES = 13


@keras.saving.register_keras_serializable("playbach")
class KeyProfile(layers.Layer):
    """The piece's notes of each pitch class so far [..., 12] -> their shares and how much
    evidence they are (13 floats): where the key is, stated outright. Sampling slips a note
    out of key now and then; with the profile in view the network returns instead of
    wandering off, and it knows the key from further back than its training windows."""

    def call(self, counts):
        counts = ops.cast(counts, "float32")
        total = ops.sum(counts, -1, keepdims=True)
        return ops.concatenate([counts / ops.maximum(total, 1.0), ops.log1p(total) / 8.0], -1)


def metre(onset) -> tuple:
    """Where a step falls (``onset`` in 24ths of a quarter, round the bar cycle): its place in
    the quarter, the quarter in a 2/4 or 4/4 bar, the quarter in a 3/4 bar."""
    quarter = onset // 24
    return onset % 24, quarter % 4, quarter % 3


@keras.saving.register_keras_serializable("playbach")
class Inputs(layers.Layer):
    """Every input of a step as one vector: learned embeddings of the three tokens, fixed
    pitch-class and octave features of the note, and the interval and metric position."""

    def __init__(self, sizes, dims, features: bool, context: bool, voices: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.sizes, self.dims = tuple(sizes), tuple(dims)
        self.features, self.context, self.voices = features, context, voices
        self.tokens = [layers.Embedding(n, d, name=f"embed_{h}")
                       for h, n, d in zip(HEADS, self.sizes, self.dims, strict=True)]
        if features:
            table = note_features(self.sizes[0])
            self.notes = layers.Embedding(*table.shape, trainable=False, name="notes",
                                          embeddings_initializer=keras.initializers.Constant(table))
        if context:
            self.interval = layers.Embedding(SPAN + 1, 16, name="embed_interval")
            self.beat = layers.Embedding(24, 8, name="embed_beat")  # position in the quarter
            self.in4 = layers.Embedding(4, 4, name="embed_in4")  # quarter of a 2/4 or 4/4 bar
            self.in3 = layers.Embedding(3, 4, name="embed_in3")  # quarter of a 3/4 bar
        if voices:
            self.voice = layers.Embedding(MAX_CHORD, 4, name="embed_voice")

    def build(self, input_shape) -> None:
        for layer in self._all():
            layer.build(input_shape)

    def _all(self) -> list:
        extra = [self.notes] if self.features else []
        if self.context:
            extra += [self.interval, self.beat, self.in4, self.in3]
        if self.voices:
            extra.append(self.voice)
        return [*self.tokens, *extra]

    def call(self, pitch, duration, velocity, interval, onset, profile=None, voice=None):
        parts = [e(t) for e, t in zip(self.tokens, (pitch, duration, velocity), strict=True)]
        if profile is not None:
            parts.append(profile)
        if self.features:
            parts.append(self.notes(pitch))
        if self.context:
            beat, in4, in3 = metre(onset)
            parts += [self.interval(interval), self.beat(beat), self.in4(in4), self.in3(in3)]
        if self.voices:
            parts.append(self.voice(voice))
        return ops.concatenate(parts, -1)

    def get_config(self) -> dict:
        return {**super().get_config(), "sizes": self.sizes, "dims": self.dims,
                "features": self.features, "context": self.context, "voices": self.voices}


@keras.saving.register_keras_serializable("playbach")
class Pointer(layers.Layer):
    """Copying from the last ``window`` steps (a pointer network). Bach repeats himself: a
    figure comes back as it was, or moved to another degree (a sequence), with its rhythm.
    Each step attends to earlier steps ``s`` in three ways and proposes what followed ``s``:
    the same note, the same interval from the last note, the same duration. A learned gate
    keeps the rest of the probability for the LSTM's own heads. With ``recency``, each kind
    also learns a bias per distance back: the keys are made from the LSTM's state, which
    does not say how far back a step lies, yet "the same as the step before" (a run of
    eighths) or "as four steps ago" (a repeating figure) is how rhythm and figuration work.
    With ``match`` (L), each kind also learns a bias per *match length*: how many steps up to
    this one (at most L) are, note for note and duration for duration, the steps up to the
    earlier one. A dance's written-out repeat is then found by what it is, not by a state
    that only resembles it: in the suites' held-out dances, what followed the last 16-step
    match 100-600 steps back was the next step 99.4-99.8% of the time, on 38-48% of their
    steps, where the network without it was right 36-63% (pitch) and 75-98% (duration)
    (``bench/followed.py``)."""

    def __init__(self, window: int, dim: int, durations: bool, recency: bool = False,
                 match: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.window, self.dim, self.durations = window, dim, durations
        self.recency, self.match = recency, match
        self.queries = [layers.Dense(dim, name=f"query_{k}") for k in self.kinds]
        self.keys = [layers.Dense(dim, name=f"key_{k}") for k in self.kinds]
        self.gates = [layers.Dense(1, name=f"gate_{h}") for h in self.heads]

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("pitch", "interval", "duration") if self.durations else ("pitch", "interval")

    @property
    def heads(self) -> tuple[str, ...]:
        return ("pitch", "duration") if self.durations else ("pitch",)

    def build(self, input_shape) -> None:
        for layer in (*self.queries, *self.keys, *self.gates):
            layer.build(input_shape)
        if self.recency:  # [kind, distance - 1]: zero at first, attention by content alone
            self.distance = self.add_weight(shape=(len(self.kinds), self.window),
                                            initializer="zeros", name="distance")
        if self.match:  # [kind, match length 0..L], used times MATCH_SCALE
            start = np.arange(self.match + 1, dtype="float32") * MATCH_STEP / MATCH_SCALE
            self.matched = self.add_weight(
                shape=(len(self.kinds), self.match + 1), name="matched",
                initializer=lambda shape, dtype=None: np.broadcast_to(start, shape).copy())

    @staticmethod
    def targets(pitch, duration, last):
        """What following each step would propose: the next step's pitch id, its interval id
        from this step's last note (-1 where there is none), its duration id."""
        interval = pitch - PITCH_OFFSET - last + INTERVALS
        ok = (pitch >= PITCH_OFFSET) & (last >= 0) & (interval >= 0) & (interval < SPAN)
        return pitch, ops.where(ok, interval, -1), duration

    def mix(self, x, keys, targets, allowed, last, logits, back=None, pitch_x=None,
            one_step: bool = False, match=None) -> list:
        """Each head's log-probabilities: the gate's share for the head's own softmax, the rest
        spread over the copies. ``keys`` and ``targets`` per kind [B, S, dim] and [B, S];
        ``allowed`` [B, T, S] (earlier steps in the window); ``last`` [B, T]; ``back`` [T, S]
        how many steps back each step lies (with ``recency``); ``pitch_x``, what the pitch's
        queries and gate read instead of ``x`` (the step's state told whether it joins);
        ``one_step``: batch 1, one step (the step model), where the copies are summed by
        target (a segment sum over the window) instead of through one-hot tables; ``match``
        [B, T, S] the match lengths (with ``match``)."""
        scale = 1.0 / np.sqrt(self.dim)
        pitch_x = x if pitch_x is None else pitch_x
        reads = {"pitch": pitch_x, "interval": pitch_x, "duration": x}
        scores = {k: ops.einsum("btd,bsd->bts", q(reads[k]), keys[k]) * scale
                  for k, q in zip(self.kinds, self.queries, strict=True)}
        if self.recency:
            index = ops.clip(back - 1, 0, self.window - 1)
            scores = {k: scores[k] + ops.take(self.distance[i], index)[None]
                      for i, k in enumerate(self.kinds)}
        if self.match:
            scores = {k: scores[k] + ops.take(self.matched[i] * MATCH_SCALE, match)
                      for i, k in enumerate(self.kinds)}
        out = []
        for head, gate, own in zip(self.heads, self.gates, logits, strict=True):
            kinds = ("pitch", "interval") if head == "pitch" else ("duration",)
            size = own.shape[-1]
            masked = [ops.where(allowed & ops.expand_dims(targets[k] >= 0, 1), scores[k], NEVER)
                      for k in kinds]
            weights = ops.softmax(ops.concatenate([gate(reads[head]), *masked], -1), -1)
            p = weights[..., :1] * ops.softmax(own, -1)
            for k, w in zip(kinds, ops.split(weights[..., 1:], len(kinds), axis=-1),
                            strict=True):
                copied = copies(w, targets[k], SPAN if k == "interval" else size, one_step)
                if k == "interval":
                    copied, valid = by_interval(copied, last, size)
                    copied = ops.where(valid, copied, 0.0)
                p = p + copied
            # copies that land nowhere (an interval from no note) are given back: a distribution
            out.append(ops.log(p / ops.sum(p, -1, keepdims=True) + 1e-9))
        return out

    def advance(self, x, pitch, duration, last, memory: dict) -> tuple[dict, dict, dict]:
        """One step (batch 1) into ``memory``, which holds per kind the keys and targets of the
        last ``window`` steps, and the keys of the step before, which this step's tokens
        complete: (the new memory, the keys and the targets to copy from now)."""
        p, iv, d = self.targets(pitch, duration, memory["pending_last"])
        done = {"pitch": p, "interval": iv, "duration": d}
        new = {}
        for k in self.kinds:
            new[f"keys_{k}"] = ops.concatenate(
                [memory[f"keys_{k}"][:, 1:], memory[f"pending_{k}"][:, None]], 1)
            new[f"targets_{k}"] = ops.concatenate([memory[f"targets_{k}"][:, 1:], done[k][:, None]],
                                                  1)
        new["valid"] = ops.concatenate([memory["valid"][:, 1:], memory["pending"][:, None]], 1)
        if self.match:
            self.advance_match(pitch, duration, memory, new)
        keys = {k: new[f"keys_{k}"] for k in self.kinds}
        targets = {k: ops.where(new["valid"], new[f"targets_{k}"], -1) for k in self.kinds}
        for k, key in self.key(x).items():
            new[f"pending_{k}"] = key
        new["pending_last"], new["pending"] = last, ops.ones_like(memory["pending"])
        return new, keys, targets

    def advance_match(self, pitch, duration, memory: dict, new: dict) -> None:
        """The match lengths of this step with each step in memory, one step on: the steps
        in memory carry their own tokens (``seen_*``; the step before's, ``pending_seen``,
        joins them now), and a step's match is one more than the match of the step before
        it with the step before this one (the same slot a step earlier), or 0."""
        for i, k in enumerate(("pitch", "duration")):
            new[f"seen_{k}"] = ops.concatenate(
                [memory[f"seen_{k}"][:, 1:], memory["pending_seen"][:, i:i + 1]], 1)
        same = ((new["seen_pitch"] == ops.cast(pitch, "float32")[:, None])
                & (new["seen_duration"] == ops.cast(duration, "float32")[:, None]) & new["valid"])
        grown = ops.minimum(memory["match"] + 1.0, float(self.match))
        new["match"] = ops.where(same, grown, 0.0)
        new["pending_seen"] = ops.cast(ops.stack([pitch, duration], 1), "float32")

    def mix_step(self, x, new: dict, keys: dict, targets: dict, last, logits,
                 pitch_x=None) -> list:
        """The heads' log-probabilities of one step (batch 1), from :meth:`advance`'s memory."""
        back = ops.arange(self.window, 0, -1)[None]  # the memory's newest step is 1 back
        match = ops.cast(new["match"], "int32")[:, None] if self.match else None
        out = self.mix(x[:, None], keys, targets, new["valid"][:, None], last[:, None],
                       [lg[:, None] for lg in logits], back,
                       None if pitch_x is None else pitch_x[:, None], one_step=True,
                       match=match)
        return [o[:, 0] for o in out]

    def key(self, x) -> dict:
        return {k: layer(x) for k, layer in zip(self.kinds, self.keys, strict=True)}

    def call(self, x, pitch, duration, last, logits, pitch_x=None):
        """Whole sequences: step ``t`` copies from steps ``t - window`` .. ``t - 1``."""
        t = ops.shape(x)[1]
        nxt = [ops.concatenate([v[:, 1:], ops.zeros_like(v[:, :1])], 1) for v in (pitch, duration)]
        # the interval target of step s: from last[s] to the note at s + 1
        p, iv, d = self.targets(nxt[0], nxt[1], last)
        targets = {"pitch": p, "interval": iv, "duration": d}
        i, j = ops.arange(t)[:, None], ops.arange(t)[None, :]
        allowed = ((j < i) & (i - j <= self.window))[None]
        match = match_lengths(pitch, duration, self.match) if self.match else None
        return self.mix(x, self.key(x), targets, allowed, last, logits, i - j, pitch_x,
                        match=match)

    def get_config(self) -> dict:
        return {**super().get_config(), "window": self.window, "dim": self.dim,
                "durations": self.durations, "recency": self.recency, "match": self.match}


def match_lengths(pitch, duration, longest: int):
    """[B, T, T]: for steps t and s, how many steps up to t equal (pitch and duration) the
    steps up to s, at most ``longest``: the steps k back of both are compared, k = 0, 1, ...,
    while all so far were equal (before the window's start nothing is)."""
    same = (pitch[:, :, None] == pitch[:, None, :]) & (duration[:, :, None] == duration[:, None, :])
    run, total = same, ops.cast(same, "int32")
    for k in range(1, longest):
        earlier = ops.pad(same[:, :-k, :-k], [[0, 0], [k, 0], [k, 0]], constant_values=False)
        run = run & earlier
        total = total + ops.cast(run, "int32")
    return total


def copies(weights, targets, size: int, one_step: bool):
    """The probability each of ``size`` values gets from copying: ``weights`` [B, T, S] on the
    steps of the window, ``targets`` [B, S] what each proposes (-1: nothing; its weight is ~0
    already). One step summed by target: a window of 512 costs 512 additions, not 512 x size
    multiplications through a one-hot table (4x the step model's time)."""
    ids = ops.maximum(targets, 0)
    if one_step:
        return ops.reshape(ops.segment_sum(weights[0, 0], ids[0], size), (1, 1, size))
    return ops.einsum("bts,bsv->btv", weights, ops.one_hot(ids, size))


def note_features(size: int) -> np.ndarray:
    """[pitch ids, 24]: each note's pitch class (12) and octave (11) and whether it is a rest
    (1), as fixed inputs beside the learned embedding: a note seen rarely (a register only
    transposition reaches) still shares what the network knows of its class and octave."""
    table = np.zeros((size, 24), np.float32)
    table[1, 23] = 1.0  # the rest
    for i in range(PITCH_OFFSET, size):
        m = i - PITCH_OFFSET
        table[i, m % 12] = 1.0
        table[i, 12 + min(m // 12, 10)] = 1.0
    return table


@keras.saving.register_keras_serializable("playbach")
class Heads(layers.Layer):
    """The LSTM's own logits per head. With ``relative``, a pitch's logit is its absolute one
    plus one for its interval from the last note (sequences and arpeggios are the same
    intervals in any key), or a shared logit for notes out of an interval's reach. With
    ``voices``, also one for its interval from each of two notes of the chords (see
    ``dataset.voices``): in four parts a voice moves from its own last note, which is
    three or four steps back, not the one just sounded. ``key`` is the pitch-class
    profile's bias (``key_profile``)."""

    def __init__(self, sizes, relative: bool, key: bool = False, voices: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.sizes, self.relative, self.key = tuple(sizes), relative, key
        self.voices = voices
        self.outs = [layers.Dense(n, name=f"{h}_head") for h, n in zip(HEADS, self.sizes,
                                                                       strict=True)]
        if relative:
            self.interval_logits = layers.Dense(SPAN, name="interval_head")
            self.out_of_reach = layers.Dense(1, name="out_of_reach")
        if key:
            self.key_logits = layers.Dense(12, use_bias=False, name="key_head")
        if voices:
            self.voice_logits = [layers.Dense(SPAN, name=f"{v}_head") for v in ("join", "bass")]
        ids = np.arange(self.sizes[0])
        self.class_of = np.maximum(ids - PITCH_OFFSET, 0) % 12  # pitch id -> its pitch class
        self.is_note = (ids >= PITCH_OFFSET).astype("float32")

    def build(self, input_shape) -> None:
        extra = [self.interval_logits, self.out_of_reach] if self.relative else []
        extra += self.voice_logits if self.voices else []
        for layer in (*self.outs, *extra):
            layer.build(input_shape)
        if self.key:
            self.key_logits.build((*input_shape[:-1], PROFILE_FEATURES))

    def call(self, x, last, profile=None, join=None, bass=None, pitch_x=None) -> list:
        """``pitch_x``: what the pitch logits read instead of ``x`` (told whether it joins)."""
        px = x if pitch_x is None else pitch_x
        pitch = self.outs[0](px)
        duration, velocity = (layer(x) for layer in self.outs[1:])
        if self.relative:
            rel, valid = by_interval(self.interval_logits(px), last, self.sizes[0])
            pitch = pitch + ops.where(valid, rel, self.out_of_reach(px))
        if self.voices:
            for layer, ref in zip(self.voice_logits, (join, bass), strict=True):
                rel, valid = by_interval(layer(px), ref, self.sizes[0])
                pitch = pitch + ops.where(valid, rel, 0.0)
        if self.key:  # each note raised or lowered by how its class fits the key
            fit = ops.take(self.key_logits(profile), self.class_of, axis=-1)
            pitch = pitch + fit * self.is_note
        return [pitch, duration, velocity]

    def get_config(self) -> dict:
        return {**super().get_config(), "sizes": self.sizes, "relative": self.relative,
                "key": self.key, "voices": self.voices}


@keras.saving.register_keras_serializable("playbach")
class Rhythm(layers.Layer):
    """A second, small LSTM that reads only the rhythm (each step's duration and where the
    next one begins in the bar) and adds its logits to the duration head's (a product of
    experts). Why: away from a repeat, the main LSTM's durations were worse than a 6-gram of
    durations alone (fold 1 of the suites, steps with no earlier match: 58.8% against 73.1%):
    its state is mostly pitch, and in an unseen movement the pitches are new. A stream that
    never sees a pitch is on known ground in any movement of the same metre."""

    def __init__(self, durations: int, units: int, dropout: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.durations, self.units, self.dropout = durations, units, dropout
        self.embed = layers.Embedding(durations, 8, name="rhythm_duration")
        self.beat = layers.Embedding(24, 8, name="rhythm_beat")  # position in the quarter
        self.in4 = layers.Embedding(4, 4, name="rhythm_in4")
        self.in3 = layers.Embedding(3, 4, name="rhythm_in3")
        self.lstm = layers.LSTM(units, return_sequences=True, dropout=dropout,
                                name="rhythm_lstm")
        self.out = layers.Dense(durations, name="rhythm_head")

    def build(self, input_shape) -> None:
        for layer in (self.embed, self.beat, self.in4, self.in3):
            layer.build(input_shape)
        width = sum(e.output_dim for e in (self.embed, self.beat, self.in4, self.in3))
        self.lstm.build((None, None, width))
        self.out.build((None, None, self.units))

    def features(self, duration, onset):
        beat, in4, in3 = metre(onset)
        return ops.concatenate([self.embed(duration), self.beat(beat), self.in4(in4),
                                self.in3(in3)], -1)

    def call(self, duration, onset, training=None):
        return self.out(self.lstm(self.features(duration, onset), training=training))

    def step(self, duration, onset, h, c):
        """One step (the step model): (logits, h, c)."""
        out, (h, c) = self.lstm.cell(self.features(duration, onset), [h, c], training=False)
        return self.out(out), h, c

    def get_config(self) -> dict:
        return {**super().get_config(), "durations": self.durations, "units": self.units,
                "dropout": self.dropout}
