"""Honest numbers: per-head accuracy and nats per step on held-out pieces, every step scored,
beside the baselines (the best Kneser–Ney n-gram, unigram, repeat-previous) on the same steps."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from playbach.keys import Key, KeyTable
from playbach.stepmodel import HEADS, log_softmax, pitch_log_probs
from trainer.config import TrainConfig
from trainer.dataset import key_table, windows, with_key, xy
from trainer.ngram import RepeatPrevious, Unigram, best_ngram, summary


@dataclass(frozen=True)
class Hidden:
    """What the network is trained knowing but is never told when it is scored, so its
    scores are marginals over it: the key (``keys``: every key it knows, equally likely at
    first, then weighed by how well each explains the steps so far: a posterior) and, with
    ``joins``, whether the step joins a chord (weighed by the duration head)."""

    keys: tuple[Key, ...] | None = None
    joins: bool = False

    @classmethod
    def of(cls, cfg: TrainConfig, table: KeyTable | None) -> Hidden:
        return cls(table.hypotheses if cfg.key and table else None, cfg.joins)

    @classmethod
    def fitted(cls, cfg: TrainConfig, train: list[np.ndarray], octaves: bool) -> Hidden:
        """For a network trained on ``train``: the keys those pieces are in."""
        return cls.of(cfg, key_table(train, 0, octaves) if cfg.key else None)


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def predict(model, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``model``'s outputs for a batch, compiled once for every batch size and length (Keras's
    ``predict_on_batch`` traced the graph again for nearly every new shape: 11 of 12 calls
    scoring a tiny model, 14 of its 15 s)."""
    fn = _COMPILED.get(model)
    if fn is None:
        import tensorflow as tf

        spec = {i.name: tf.TensorSpec([None, None, *i.shape[2:]], i.dtype)
                for i in model.inputs}
        fn = _COMPILED[model] = tf.function(lambda inputs: model(inputs, training=False),
                                            input_signature=[spec])
    return {h: v.numpy() for h, v in fn({k: x[k] for k in fn.input_signature[0]}).items()}


# nats behind the likeliest key after which a key leaves the mixture (its weight is below
# 2e-9). At 50, 89% of the chorales' keys were still in after PREFIX steps and were run over
# the whole piece; at 20, 31%: the shipped model's test scores alike to six digits, 2.7x
# sooner (at 10 they moved in the fourth).
PRUNE = 20.0
PREFIX = 64  # steps every key is run for; after them only the keys still in the mixture


def log_probs(model, seqs: list[np.ndarray], hidden: Hidden) -> list[dict[str, np.ndarray]]:
    """Per piece and head, the network's log-probabilities of every next step [T, size], from
    its start token, as it generates: each hypothesis about the key run over the piece, mixed
    at every step by its posterior given the steps before. A key that falls PRUNE nats behind
    the likeliest leaves the mixture for good (its weight is below 2e-9): every key is run
    for the first PREFIX steps, only those still in it for the rest, as the step model does
    in ``score`` (the same rule, so both give the same numbers)."""
    keys = list(hidden.keys or (None,))
    if len(keys) == 1:
        return [mixture(*one, np.ones(1, bool))[0] for one in
                stacked(run(model, [(s, keys[0]) for s in seqs], hidden.joins), len(seqs), 1)]
    heads = stacked(run(model, [(s[:PREFIX + 1], k) for s in seqs for k in keys],
                        hidden.joins), len(seqs), len(keys))
    first = [mixture(logp, joint, np.ones(len(keys), bool)) for logp, joint in heads]
    longer = [i for i, s in enumerate(seqs) if len(s) - 1 > PREFIX]
    kept = {i: [k for k, a in zip(keys, first[i][1], strict=True) if a] for i in longer}
    rest = iter(run(model, [(seqs[i], k) for i in longer for k in kept[i]], hidden.joins))
    out = []
    for i in range(len(seqs)):
        if i not in kept:
            out.append(first[i][0])
            continue
        logp, joint = stacked([next(rest) for _ in kept[i]], 1, len(kept[i]))[0]
        tail, _, _ = mixture({h: v[:, PREFIX:] for h, v in logp.items()}, joint[:, PREFIX:],
                             np.ones(len(kept[i]), bool), first[i][2][first[i][1]])
        out.append({h: np.concatenate([first[i][0][h], tail[h]]) for h in HEADS})
    return out


def piece_log_probs(model, seq: np.ndarray, hidden: Hidden) -> dict[str, np.ndarray]:
    return log_probs(model, [seq], hidden)[0]


def stacked(results: list, pieces: int, keys: int) -> list[tuple[dict, np.ndarray]]:
    """``run``'s results, piece by piece then key by key, as per piece ([K, T, size] per head,
    [K, T])."""
    out = []
    for i in range(pieces):
        part = results[i * keys:(i + 1) * keys]
        out.append(({h: np.stack([r[0][h] for r in part]) for h in HEADS},
                    np.stack([r[1] for r in part])))
    return out


def mixture(logp: dict[str, np.ndarray], joint: np.ndarray, alive: np.ndarray,
            told: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray,
                                                     np.ndarray]:
    """Each step's predictive distribution per head [T, size] from every key's [K, T, size]:
    weighed by the posterior (uniform prior, times ``joint`` [K, T], the log-likelihood of each
    step), over the keys still within PRUNE of the likeliest. Also the keys still in at the
    end and their log-likelihoods (``told``: where they stood before the first step)."""
    told = np.zeros(len(alive)) if told is None else told.astype(float).copy()
    alive = alive.copy()
    steps = joint.shape[1]
    weights = np.full((len(alive), steps), -np.inf)
    for t in range(steps):
        alive &= told >= told[alive].max() - PRUNE
        weights[alive, t] = told[alive] - np.logaddexp.reduce(told[alive])
        told[alive] += joint[alive, t]
    mixed = {h: np.logaddexp.reduce(weights[..., None] + v, axis=0) for h, v in logp.items()}
    return mixed, alive, told


def run(model, jobs: list[tuple[np.ndarray, Key | None]], joins: bool
        ) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Each (piece, key) through the network, told that key: per head the log-probabilities of
    the next step [T, size] (the pitch's mixed over joining), and the log-likelihood of every
    step's true tokens [T] (the pitch's given whether it joins). Batched by length, padded at
    the end (the network is causal: padding changes no earlier step)."""
    out: list = [None] * len(jobs)
    order = sorted(range(len(jobs)), key=lambda i: len(jobs[i][0]))
    while order:
        batch = [order.pop()]  # the longest left, then as many as fit beside it
        longest = len(jobs[batch[0]][0])
        fit = max(1, min(16384 // longest, 50_000_000 // longest ** 2))  # the pointer's T x T
        while order and len(batch) < fit:
            batch.append(order.pop())
        win = np.stack([np.pad(s if k is None else with_key(s, k),
                               ((0, longest - len(s)), (0, 0))) for s, k in
                        (jobs[i] for i in batch)])
        for j, (logp, joint) in zip(batch, run_batch(model, win, joins), strict=True):
            size = len(jobs[j][0]) - 1
            out[j] = ({h: v[:size] for h, v in logp.items()}, joint[:size])
    return out


def run_batch(model, win: np.ndarray, joins: bool) -> list[tuple[dict, np.ndarray]]:
    x, y, _ = xy(win, "seq2seq")
    told = [{**x, "joins": np.full_like(x["joins"], j)} for j in (0, 1)] if joins else [x]
    # compiled, not eager: an eager LSTM runs its time loop in Python (10x slower)
    outs = [predict(model, t) for t in told]
    dur, vel = log_softmax(outs[0]["duration"]), log_softmax(outs[0]["velocity"])
    if joins:
        rows = np.stack([log_softmax(o["pitch"]) for o in outs], -2)
        pitch = pitch_log_probs(rows, np.asarray(outs[0]["duration"]), True)
        given = np.where(x["joins"][..., None] == 1, rows[..., 1, :], rows[..., 0, :])
    else:
        pitch = given = log_softmax(outs[0]["pitch"])
    joint = sum(np.take_along_axis(lp, y[h][..., None], -1)[..., 0]
                for h, lp in zip(HEADS, (given, dur, vel), strict=True))
    return [({h: lp[b].astype(np.float32) for h, lp in zip(HEADS, (pitch, dur, vel),
                                                          strict=True)}, joint[b])
            for b in range(len(win))]


def piece_scores(model, seqs: list[np.ndarray], hidden: Hidden = Hidden()
                 ) -> list[dict[str, dict[str, float]]]:
    """Per piece and head: accuracy and nats per step, every next token scored."""
    out = []
    for seq, logp in zip(seqs, log_probs(model, seqs, hidden), strict=True):
        row = {}
        for j, h in enumerate(HEADS):
            target = seq[1:, j]
            picked = np.take_along_axis(logp[h], target[:, None], -1)[:, 0]
            row[h] = summary(int((logp[h].argmax(-1) == target).sum()), -float(picked.sum()),
                             len(target))
        out.append(row)
    return out


def pooled(rows: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per-piece scores summed into one score over all their steps."""
    out = {}
    for h in HEADS:
        n = sum(r[h]["tokens"] for r in rows)
        out[h] = summary(round(sum(r[h]["accuracy"] * r[h]["tokens"] for r in rows)),
                         sum(r[h]["nats"] * r[h]["tokens"] for r in rows), n)
    return out


def network_scores(model, seqs: list[np.ndarray], hidden: Hidden = Hidden()
                   ) -> dict[str, dict[str, float]]:
    """Whole pieces from their start token, as the model generates: every next token scored."""
    return pooled(piece_scores(model, seqs, hidden))


def baseline_scores(train: list[np.ndarray], val: list[np.ndarray], held: dict[str, list],
                    sizes: tuple[int, ...]) -> dict[str, dict]:
    """The n-gram whose order did best on ``val``, the unigram and repeat-previous, per head,
    scored on every set in ``held`` (name -> pieces): ``{baseline: {set: {head: scores}}}``,
    and ``ngram_order``: the order chosen per head."""
    out: dict[str, dict] = {b: {k: {} for k in held} for b in ("ngram", "unigram", "repeat")}
    out["ngram_order"] = {}
    for j, h in enumerate(HEADS):
        tr, va = [s[:, j] for s in train], [s[:, j] for s in val]
        ngram, _ = best_ngram(tr, va, sizes[j])
        out["ngram_order"][h] = ngram.order
        models = {"ngram": ngram, "unigram": Unigram(sizes[j]).fit(tr),
                  "repeat": RepeatPrevious(sizes[j]).fit(tr)}
        for name, model in models.items():
            for k, seqs in held.items():
                out[name][k][h] = model.score([s[:, j] for s in seqs])
    return out


def window_scores(model, seqs: list[np.ndarray], length: int, batch: int = 256
                  ) -> dict[str, dict[str, float]]:
    """The original project's way to predict: each step from the ``length`` steps before it
    only (at a piece's start, from the start step on). Every step scored, as above."""
    nll = dict.fromkeys(HEADS, 0.0)
    correct = dict.fromkeys(HEADS, 0)
    count = dict.fromkeys(HEADS, 0)

    def score(win: np.ndarray) -> None:
        x, y, _ = xy(win, "last")
        out = predict(model, x)
        for h in HEADS:
            logp = log_softmax(np.asarray(out[h])[:, -1])
            target = y[h][:, -1]
            nll[h] -= float(np.take_along_axis(logp, target[:, None], -1).sum())
            correct[h] += int((logp.argmax(-1) == target).sum())
            count[h] += len(target)

    for seq in seqs:
        for t in range(1, min(length, len(seq))):  # the first windows are shorter
            score(seq[None, :t + 1])
    full = windows(seqs, length + 1, 1, pad=False)
    for i in range(0, len(full), batch):
        score(full[i:i + batch])
    return {h: summary(correct[h], nll[h], count[h]) for h in HEADS}


def end_accuracy(model, x: dict, y: dict, w: dict, batch: int = 256) -> float:
    """Pitch accuracy at the last step of each window (where its weight is not zero)."""
    hits, n = 0, 0
    for i in range(0, len(y["pitch"]), batch):
        logits = predict(model, {h: v[i:i + batch] for h, v in x.items()})
        pred = np.asarray(logits["pitch"])[:, -1].argmax(-1)
        keep = w["pitch"][i:i + batch, -1] > 0
        hits += int((pred == y["pitch"][i:i + batch, -1])[keep].sum())
        n += int(keep.sum())
    return hits / max(n, 1)
