"""The policy base class: scores -> logits -> slates and marginals, with item statistics and feedback.

Subclasses (`bandits`) define `_dist` (the (B, K, N) marginals an evaluation needs) and
`_sample` (one served slate with the propensity of each shown item).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from lmrec.exploration.policies.config import POLICY_FORMAT, POLICY_FORMAT_VERSION, PolicyConfig
from lmrec.exploration.policies.state import PolicyState, feedback_state


@dataclass
class Slate:
    """K items in display order with the marginal propensity of each at its position."""

    items: np.ndarray  # (K,) candidate ids
    indices: np.ndarray  # (K,) positions of `items` in the candidate array
    propensities: np.ndarray | None  # (K,) P(items[k] at position k); None if not asked for

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items.tolist(),
            "propensities": None if self.propensities is None else self.propensities.tolist(),
        }


def stable_key(key: int | str | bytes) -> int:
    """A process-independent 63-bit integer for seeding from a request key."""
    raw = key if isinstance(key, bytes) else str(key).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") >> 1


def _as_batch(scores: np.ndarray) -> tuple[np.ndarray, bool]:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        return scores[None, :], True
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N,) or (B, N), got shape {scores.shape}")
    return scores, False


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


class Stats(NamedTuple):
    """Item statistics aligned with a score array: impressions, clicks, expected clicks."""

    n: np.ndarray
    c: np.ndarray
    e: np.ndarray

    def row(self) -> Stats:
        return Stats(self.n[None], self.c[None], self.e[None])


class Policy:
    """Base class: subclasses define how a batch of scores becomes slates and marginals.

    `action_dist` gives the (B, K, N) matrix P(candidate j at position k); each
    position's row sums to 1 over valid candidates. `choose` samples one slate.
    """

    type: str = "base"

    def __init__(self, config: PolicyConfig, state: PolicyState | None = None) -> None:
        self.config = config
        self.state = state if state is not None else PolicyState()
        self.delta = PolicyState()  # feedback since the last `take_delta()` (what a replica ships)
        self.rng = np.random.default_rng(config.seed)

    # ---- randomness
    def rng_for(self, key: int | str | bytes | None = None) -> np.random.Generator:
        """The policy's own stream, or a stream fixed by (seed, key) for reproducible requests."""
        if key is None:
            return self.rng
        return np.random.default_rng([self.config.seed, stable_key(key)])

    # ---- scores -> what the policy ranks on
    def logits(self, scores: np.ndarray) -> np.ndarray:
        return self.config.score_scale * np.asarray(scores, dtype=np.float64) + self.config.score_shift

    def prior_mean(self, z: np.ndarray) -> np.ndarray:
        if self.config.prior == "identity":
            return np.clip(z, 1e-6, 1 - 1e-6)
        return np.clip(_sigmoid(z), 1e-6, 1 - 1e-6)

    def click_probability(self, scores: np.ndarray) -> np.ndarray:
        """The model's click probability for raw `scores` (what `expected` clicks sum)."""
        return self.prior_mean(self.logits(scores))

    def _stats(self, candidates: np.ndarray | None, shape: tuple[int, ...]) -> Stats:
        if candidates is None:
            z = np.zeros(shape, dtype=np.int64)
            return Stats(z, z.copy(), np.zeros(shape))
        return Stats(*self.state.stats(np.asarray(candidates, dtype=np.int64).reshape(shape)))

    # ---- public API
    def action_dist(
        self,
        scores: np.ndarray,
        k: int | None = None,
        candidates: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """(B, K, N) marginals P(candidate j shown at position k); (K, N) for 1-D scores.

        `candidates` (item ids, same shape as scores) are needed by UCB and Thompson
        to look up item statistics; `mask` marks valid candidates (padding is False).
        """
        s, single = _as_batch(scores)
        k = self.config.slate_size if k is None else int(k)
        valid = np.ones(s.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(s.shape)
        nvalid = valid.sum(axis=1)
        if np.any(nvalid < k):
            raise ValueError(
                f"slate size {k} exceeds the valid candidates of {int((nvalid < k).sum())} row(s) (min {int(nvalid.min())})"
            )
        out = self._dist(self.logits(s), self._stats(candidates, s.shape), valid, k, rng or self.rng)
        return out[0] if single else out

    def choose(
        self,
        candidates: Sequence[int] | np.ndarray,
        scores: Sequence[float] | np.ndarray,
        k: int | None = None,
        *,
        key: int | str | bytes | None = None,
        rng: np.random.Generator | None = None,
        with_propensities: bool = True,
    ) -> Slate:
        """Sample a slate of min(K, N) items from one request's candidates and scores."""
        cand = np.asarray(candidates, dtype=np.int64).ravel()
        s = np.asarray(scores, dtype=np.float64).ravel()
        if cand.shape != s.shape:
            raise ValueError(f"{len(cand)} candidates but {len(s)} scores")
        if len(cand) == 0:
            raise ValueError("no candidates to choose from")
        k = min(self.config.slate_size if k is None else int(k), len(cand))
        gen = rng if rng is not None else self.rng_for(key)
        idx, prop = self._sample(self.logits(s), Stats(*self.state.stats(cand)), k, gen, with_propensities)
        return Slate(cand[idx], idx, prop)

    def update(
        self,
        items: Sequence[int] | np.ndarray,
        rewards: Sequence[float] | np.ndarray,
        scores: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """Learn from feedback: one impression per shown item, a click where reward is 1.

        `scores` (the model's raw scores of the shown items) add the model's expected
        clicks, which `feedback: lift` policies compare the real clicks against.
        """
        if scores is None and self.config.feedback == "lift":
            raise ValueError("a policy with feedback 'lift' needs the shown items' scores to learn from clicks")
        expected = None if scores is None else self.click_probability(np.asarray(scores, dtype=np.float64).ravel())
        fb = feedback_state(items, rewards, expected)
        self.state._add(fb)
        self.delta._add(fb)

    def take_delta(self) -> PolicyState:
        """Feedback seen since the last call (for an aggregator to merge), and reset it."""
        d, self.delta = self.delta, PolicyState()
        return d

    def set_state(self, state: PolicyState, keep_delta: bool = True) -> None:
        """Adopt a merged global state; feedback not yet shipped stays applied on top."""
        self.state = state.merge(self.delta) if keep_delta else state.copy()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": POLICY_FORMAT,
            "format_version": POLICY_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "state": self.state.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config}, {self.state})"

    # ---- feedback models shared by UCB and Thompson
    def lift_posterior(self, st: Stats) -> tuple[np.ndarray, np.ndarray]:
        """Gamma(shape, rate) posterior of each item's click lift over the model (prior mean 1).

        lift = real clicks / clicks the model expected; prior Gamma(w, w) is worth w
        expected clicks, so an item needs evidence before its model score is overruled.
        """
        w = self.config.prior_strength
        return w + st.c, w + st.e

    # ---- subclass hooks
    def _dist(self, z: np.ndarray, st: Stats, valid: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _sample(
        self, z: np.ndarray, st: Stats, k: int, rng: np.random.Generator, with_prop: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError
