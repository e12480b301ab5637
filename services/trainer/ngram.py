"""The baselines the network must beat, on exactly its steps and vocabulary.

- :class:`NGram`: interpolated Kneser–Ney (absolute discounting, continuation counts for the
  lower orders), the standard strong n-gram; its order is chosen on validation pieces.
- :class:`Unigram`: the training frequencies (add-one smoothed).
- :class:`RepeatPrevious`: the previous token again (for a duration, often right).

Each head is modelled on its own history. All give proper probabilities over the allowed
tokens (never the start token), so their nats per step compare with the network's."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from playbach.vocab import BOS_ID

DISCOUNT = 0.75
ORDERS = (1, 2, 3, 4, 5, 6)


def _allowed(size: int, banned: Sequence[int]) -> np.ndarray:
    allowed = np.ones(size)
    allowed[list(banned)] = 0
    return allowed


class Baseline:
    """``probs(context)``: P(next | the tokens before it, starting with the start token)."""

    def __init__(self, size: int, banned: Sequence[int] = (0,)) -> None:
        self.size = size
        self.allowed = _allowed(size, banned)

    def probs(self, context: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def score(self, sequences: Sequence[Sequence[int]]) -> dict[str, float]:
        """Accuracy and nats per step on every step after the start token."""
        nll, correct, n = 0.0, 0, 0
        for seq in sequences:
            for t in range(1, len(seq)):
                p = self.probs(seq[:t])
                nll -= float(np.log(max(p[seq[t]], 1e-12)))
                correct += int(np.argmax(p) == seq[t])
                n += 1
        return summary(correct, nll, n)


def summary(correct: int, nll: float, n: int) -> dict[str, float]:
    nats = nll / max(n, 1)
    return {"accuracy": correct / max(n, 1), "nats": nats, "bits": nats / np.log(2),
            "perplexity": float(np.exp(nats)), "tokens": n}


class NGram(Baseline):
    def __init__(self, order: int, size: int, banned: Sequence[int] = (0,),
                 discount: float = DISCOUNT) -> None:
        super().__init__(size, banned)
        self.order, self.discount = order, discount
        self.uniform = self.allowed / self.allowed.sum()
        self.counts: list[dict[tuple[int, ...], Counter[int]]] = []
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def fit(self, sequences: Sequence[Sequence[int]]) -> NGram:
        """Counts of each order; below the top order, Kneser–Ney's continuation counts (in how
        many contexts a token follows a shorter history, not how often)."""
        top: list[defaultdict[tuple[int, ...], Counter[int]]] = [
            defaultdict(Counter) for _ in range(self.order)]
        for seq in sequences:
            for t in range(1, len(seq)):
                for k in range(min(self.order, t + 1)):
                    top[k][tuple(seq[t - k:t])][seq[t]] += 1
        continuation: list[defaultdict[tuple[int, ...], Counter[int]]] = [
            defaultdict(Counter) for _ in range(self.order)]
        for k in range(1, self.order):
            for context, followers in top[k].items():
                for token in followers:
                    continuation[k - 1][context[1:]][token] += 1
        # a history as long as the sequence so far (shorter than the order) is a top count too
        self.counts = [{**continuation[k], **{c: f for c, f in top[k].items() if c[:1] == (0,)}}
                       for k in range(self.order - 1)] + [dict(top[self.order - 1])]
        self._cache.clear()
        return self

    def probs(self, context: Sequence[int]) -> np.ndarray:
        context = tuple(context[-(self.order - 1):]) if self.order > 1 else ()
        cached = self._cache.get(context)
        if cached is not None:
            return cached
        p = self.uniform
        for k in range(len(context) + 1):
            followers = self.counts[k].get(context[len(context) - k:])
            if not followers:
                continue
            total = sum(followers.values())
            tokens = list(followers)
            counts = np.array([followers[t] for t in tokens], float)
            own = np.zeros(self.size)
            own[tokens] = np.maximum(counts - self.discount, 0) / total
            p = own + (self.discount * len(tokens) / total) * p
        p = p * self.allowed
        p = p / p.sum()
        self._cache[context] = p
        return p


class Unigram(Baseline):
    def fit(self, sequences: Sequence[Sequence[int]]) -> Unigram:
        counts = np.bincount(np.concatenate([np.asarray(s[1:]) for s in sequences]),
                             minlength=self.size)[:self.size] + 1.0
        counts *= self.allowed
        self.p = counts / counts.sum()
        return self

    def probs(self, context: Sequence[int]) -> np.ndarray:
        return self.p


class RepeatPrevious(Baseline):
    """The previous token with the probability it repeats in training, the rest spread by
    the unigram; after the start token, the unigram."""

    def fit(self, sequences: Sequence[Sequence[int]]) -> RepeatPrevious:
        self.unigram = Unigram(self.size).fit(sequences)
        pairs = [pair for s in sequences for pair in itertools.pairwise(s[1:])]
        self.repeat = (sum(a == b for a, b in pairs) + 1) / (len(pairs) + 2)
        return self

    def probs(self, context: Sequence[int]) -> np.ndarray:
        last = context[-1]
        if last == BOS_ID or not self.allowed[last]:
            return self.unigram.p
        p = self.unigram.p.copy()
        p[last] = 0.0
        p *= (1 - self.repeat) / p.sum()
        p[last] = self.repeat
        return p


def best_ngram(train: Sequence[Sequence[int]], val: Sequence[Sequence[int]], size: int,
               banned: Sequence[int] = (0,)) -> tuple[NGram, dict[int, float]]:
    """The n-gram of the order with the fewest nats per step on the validation pieces."""
    found = {order: NGram(order, size, banned).fit(train) for order in ORDERS}
    nats = {order: model.score(val)["nats"] for order, model in found.items()}
    return found[min(nats, key=nats.get)], nats  # type: ignore[arg-type]
