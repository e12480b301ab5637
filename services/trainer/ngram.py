"""The baseline: an interpolated back-off n-gram per head (Witten-Bell smoothing).

Proper probabilities, so its perplexity compares with the network's on the same held-out
pieces; each head sees only its own history."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np


class NGram:
    def __init__(self, order: int, vocab_size: int, banned: Sequence[int] = (0,)) -> None:
        self.order, self.size = order, vocab_size
        self.counts: dict[tuple[int, ...], Counter[int]] = defaultdict(Counter)
        allowed = np.ones(vocab_size)
        allowed[list(banned)] = 0
        self.uniform = allowed / allowed.sum()
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def fit(self, sequences: Sequence[Sequence[int]]) -> NGram:
        for seq in sequences:
            for t in range(1, len(seq)):
                for k in range(self.order):
                    if t - k < 0:
                        break
                    self.counts[tuple(seq[t - k:t])][seq[t]] += 1
        self._cache.clear()
        return self

    def probs(self, context: Sequence[int]) -> np.ndarray:
        """P(next | the last order-1 tokens), interpolating down to the unigram and uniform."""
        context = tuple(context[-(self.order - 1):]) if self.order > 1 else ()
        if context in self._cache:
            return self._cache[context]
        p = self.uniform
        for k in range(len(context) + 1):
            followers = self.counts.get(context[len(context) - k:])
            if not followers:
                break
            total, kinds = sum(followers.values()), len(followers)
            ml = np.zeros(self.size)
            ml[list(followers)] = list(followers.values())
            lam = total / (total + kinds)
            p = lam * ml / total + (1 - lam) * p
        self._cache[context] = p
        return p

    def score(self, sequences: Sequence[Sequence[int]], skip: Sequence[int] = (0,)
              ) -> dict[str, float]:
        """Accuracy and perplexity on every next token not in ``skip``."""
        nll, correct, n = 0.0, 0, 0
        for seq in sequences:
            for t in range(1, len(seq)):
                if seq[t] in skip:
                    continue
                p = self.probs(seq[:t])
                nll -= float(np.log(max(p[seq[t]], 1e-12)))
                correct += int(np.argmax(p) == seq[t])
                n += 1
        return {"accuracy": correct / max(n, 1), "perplexity": float(np.exp(nll / max(n, 1))),
                "tokens": n}
