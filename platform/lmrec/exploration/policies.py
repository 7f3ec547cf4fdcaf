"""Exploration policies over a model's top-N candidates: greedy, epsilon-greedy,
softmax (Boltzmann), UCB and Thompson sampling (Beta-Bernoulli, model score as prior).

A policy maps the scores of one request's N candidates to a slate of K items and
the propensity of each shown item: the marginal probability that this item is
shown at this position given the scores and the policy state (what position-wise
IPS needs, the same definition as the Open Bandit Dataset's `propensity_score`).

Marginals are exact where a closed form exists (greedy, UCB, epsilon-greedy,
softmax with K = 1). For softmax with K > 1 and Thompson, `action_dist` (what an
evaluation needs, where noise averages out) is Monte Carlo, while the propensity
logged with a served slate (which estimators divide by, where Monte Carlo noise
would bias 1/p upwards) is computed deterministically: exact over the other
candidates, quadrature over the shown item's own random key. Every computation
is vectorised over a batch of requests.

State is per-item impressions and clicks (`PolicyState`), updated from feedback,
serialised to JSON and merged across replicas by addition, which is associative.
No Ray imports here: serving replicas and unit tests run this in-process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from lmrec.config import ConfigModel, check, evolve, from_dict, to_dict

PolicyType = Literal["greedy", "epsilon_greedy", "softmax", "ucb", "thompson"]
POLICY_TYPES: tuple[str, ...] = ("greedy", "epsilon_greedy", "softmax", "ucb", "thompson")
POLICY_FORMAT = "lmrec-exploration-policy"
POLICY_FORMAT_VERSION = 1
_MC_CHUNK_ELEMENTS = 4_000_000  # random draws held in memory at once (32 MB of float64)


# ------------------------------------------------------------------ config


class PolicyConfig(ConfigModel):
    """Which policy and its parameters; the JSON a search saves and serving loads.

    Scores are first mapped to logits `z = score_scale * score + score_shift`
    (a Platt calibration fitted where the scores come from), so the Thompson
    prior mean `sigmoid(z)` is a click probability.
    """

    type: PolicyType = "greedy"
    slate_size: int = 5  # K when `choose` is not given one
    epsilon: float = 0.1  # epsilon_greedy: P(show a uniformly random slate)
    temperature: float = 1.0  # softmax: weights exp(z / temperature)
    ucb_c: float = 1.0  # ucb: bonus c * sqrt(log(t + 1) / n)
    prior_strength: float = 10.0  # ucb, thompson: pseudo-impressions the model score is worth
    prior: Literal["sigmoid", "identity"] = "sigmoid"  # z -> prior click probability
    feedback: Literal["counts", "lift"] = "counts"  # ucb, thompson: pool raw clicks, or clicks relative to the model
    score_scale: float = 1.0
    score_shift: float = 0.0
    n_sim: int = 1000  # Monte Carlo draws for the marginals of sampling policies (OPE, action_dist)
    quad_points: int = 128  # quadrature points for the logged propensity of a sampled slate
    seed: int = 0

    def validate_config(self) -> None:
        check(self.type in POLICY_TYPES, "type", f"unknown policy {self.type!r}; choose one of {list(POLICY_TYPES)}")
        check(self.slate_size >= 1, "slate_size", f"must be >= 1, got {self.slate_size}")
        check(0.0 <= self.epsilon <= 1.0, "epsilon", f"must be in [0, 1], got {self.epsilon}")
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        check(self.ucb_c >= 0, "ucb_c", f"must be >= 0, got {self.ucb_c}")
        check(self.prior_strength > 0, "prior_strength", f"must be > 0, got {self.prior_strength}")
        check(
            self.score_scale > 0,
            "score_scale",
            f"must be > 0 (calibration must keep the ranking), got {self.score_scale}",
        )
        check(self.n_sim >= 1, "n_sim", f"must be >= 1, got {self.n_sim}")
        check(self.quad_points >= 8, "quad_points", f"must be >= 8, got {self.quad_points}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyConfig:
        """Validated config; unknown keys and bad values raise ConfigError naming the key."""
        return from_dict(cls, data)

    def replace(self, **changes: Any) -> PolicyConfig:
        return evolve(self, **changes)


# ------------------------------------------------------------------ state


MICRO = 1_000_000  # expected clicks are stored in micro-clicks (int64) so that merging stays exact


class PolicyState:
    """Per-item impressions, clicks and expected clicks, as sorted integer arrays.

    Expected clicks (the model's click probability summed over an item's
    impressions, in micro-clicks) let `feedback: lift` policies learn how far
    an item's real clicks are from what the model predicted. `merge` adds all
    counts, so it is associative and commutative: merging the states built from
    two replicas' feedback equals the state built from all of it.
    """

    __slots__ = ("ids", "impressions", "clicks", "expected")

    def __init__(
        self,
        ids: np.ndarray | None = None,
        impressions: np.ndarray | None = None,
        clicks: np.ndarray | None = None,
        expected: np.ndarray | None = None,
    ) -> None:
        ids = np.asarray([] if ids is None else ids, dtype=np.int64)
        n = np.asarray([] if impressions is None else impressions, dtype=np.int64)
        c = np.asarray([] if clicks is None else clicks, dtype=np.int64)
        e = np.zeros(len(ids), dtype=np.int64) if expected is None else np.asarray(expected, dtype=np.int64)
        if not (ids.shape == n.shape == c.shape == e.shape and ids.ndim == 1):
            raise ValueError(
                f"ids, impressions, clicks, expected must be 1-D and equally long, got {ids.shape}, {n.shape}, {c.shape}, {e.shape}"
            )
        if np.any(n < 0) or np.any(c < 0) or np.any(c > n) or np.any(e < 0) or np.any(e > n * MICRO):
            raise ValueError("counts must satisfy 0 <= clicks <= impressions and 0 <= expected <= impressions")
        self.ids, self.impressions, self.clicks, self.expected = _reduce(ids, n, c, e)

    @property
    def total(self) -> int:
        """t: impressions over all items (the UCB clock)."""
        return int(self.impressions.sum())

    def __len__(self) -> int:
        return len(self.ids)

    def stats(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(impressions, clicks, expected clicks as floats) of `items` (any shape); unseen items get zeros."""
        items = np.asarray(items, dtype=np.int64)
        if len(self.ids) == 0:
            z = np.zeros(items.shape, dtype=np.int64)
            return z, z.copy(), np.zeros(items.shape)
        pos = np.clip(np.searchsorted(self.ids, items), 0, len(self.ids) - 1)
        found = self.ids[pos] == items
        return (
            np.where(found, self.impressions[pos], 0),
            np.where(found, self.clicks[pos], 0),
            np.where(found, self.expected[pos], 0) / MICRO,
        )

    def lookup(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(impressions, clicks) of `items` (any shape); unseen items get 0, 0."""
        n, c, _ = self.stats(items)
        return n, c

    def update(
        self,
        items: Sequence[int] | np.ndarray,
        rewards: Sequence[float] | np.ndarray,
        expected: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """Add one impression per shown item, a click where its reward is 1, and its expected click."""
        self._add(feedback_state(items, rewards, expected))

    def _add(self, other: PolicyState) -> None:
        merged = self.merge(other)
        self.ids, self.impressions, self.clicks, self.expected = (
            merged.ids,
            merged.impressions,
            merged.clicks,
            merged.expected,
        )

    def merge(self, *others: PolicyState) -> PolicyState:
        """A new state holding the summed counts of `self` and `others`."""
        parts = (self, *others)
        return PolicyState(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.impressions for p in parts]),
            np.concatenate([p.clicks for p in parts]),
            np.concatenate([p.expected for p in parts]),
        )

    def __add__(self, other: PolicyState) -> PolicyState:
        return self.merge(other)

    def subtract(self, other: PolicyState) -> PolicyState:
        """Counts of `self` minus `other` (a replica's delta since a snapshot)."""
        extra = np.setdiff1d(other.ids, self.ids)
        if len(extra):
            raise ValueError(f"cannot subtract: {len(extra)} item(s) are in `other` only (e.g. {int(extra[0])})")
        pos = np.searchsorted(other.ids, self.ids).clip(0, max(0, len(other.ids) - 1))
        found = (other.ids[pos] == self.ids) if len(other.ids) else np.zeros(len(self.ids), dtype=bool)
        get = lambda a: np.where(found, a[pos], 0) if len(other.ids) else np.zeros(len(self.ids), dtype=np.int64)  # noqa: E731 (a one-line local helper)
        return PolicyState(
            self.ids,
            self.impressions - get(other.impressions),
            self.clicks - get(other.clicks),
            self.expected - get(other.expected),
        )

    def copy(self) -> PolicyState:
        return PolicyState(self.ids.copy(), self.impressions.copy(), self.clicks.copy(), self.expected.copy())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PolicyState):
            return NotImplemented
        return all(np.array_equal(getattr(self, a), getattr(other, a)) for a in self.__slots__)

    def __repr__(self) -> str:
        return f"PolicyState(items={len(self)}, impressions={self.total}, clicks={int(self.clicks.sum())})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.ids.tolist(),
            "impressions": self.impressions.tolist(),
            "clicks": self.clicks.tolist(),
            "expected_micro": self.expected.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyState:
        missing = {"items", "impressions", "clicks"} - set(data)
        if missing:
            raise ValueError(f"policy state is missing {sorted(missing)}")
        e = data.get("expected_micro")
        return cls(
            np.asarray(data["items"]),
            np.asarray(data["impressions"]),
            np.asarray(data["clicks"]),
            None if e is None else np.asarray(e),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> PolicyState:
        return cls.from_dict(json.loads(text))


def _reduce(
    ids: np.ndarray, n: np.ndarray, c: np.ndarray, e: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sum counts of duplicate ids (exactly, in integers), drop items with no impressions; sorted by id."""
    if len(ids) == 0:
        return ids.copy(), n.copy(), c.copy(), e.copy()
    order = np.argsort(ids, kind="stable")
    ids, n, c, e = ids[order], n[order], c[order], e[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ids)) + 1])
    uniq = ids[starts]
    nn, cc, ee = np.add.reduceat(n, starts), np.add.reduceat(c, starts), np.add.reduceat(e, starts)  # int64 sums
    keep = nn > 0
    return uniq[keep], nn[keep], cc[keep], ee[keep]


def feedback_state(
    items: Sequence[int] | np.ndarray,
    rewards: Sequence[float] | np.ndarray,
    expected: Sequence[float] | np.ndarray | None = None,
) -> PolicyState:
    """The state that one batch of (shown item, binary reward[, expected click]) feedback amounts to."""
    items = np.asarray(items, dtype=np.int64).ravel()
    r = np.asarray(rewards, dtype=np.float64).ravel()
    if items.shape != r.shape:
        raise ValueError(f"{len(items)} items but {len(r)} rewards")
    if np.any((r != 0) & (r != 1)):
        raise ValueError("Beta-Bernoulli statistics need binary rewards (0 or 1)")
    e = None
    if expected is not None:
        p = np.asarray(expected, dtype=np.float64).ravel()
        if p.shape != items.shape or np.any((p < 0) | (p > 1)):
            raise ValueError("expected clicks must be probabilities, one per shown item")
        e = np.rint(p * MICRO).astype(np.int64)
    return PolicyState(items, np.ones(len(items), dtype=np.int64), r.astype(np.int64), e)


def merge_states(*states: PolicyState) -> PolicyState:
    """Sum of any number of states (associative: grouping does not matter)."""
    if not states:
        return PolicyState()
    return states[0].merge(*states[1:])


# ------------------------------------------------------------------ slates


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


def _topk_order(keys: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest keys per row, in descending order; ties -> lower index first."""
    n = keys.shape[-1]
    if k >= n:
        return np.argsort(-keys, axis=-1, kind="stable")[..., :k]
    part = np.argpartition(-keys, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(keys, part, axis=-1)
    # Sort the k winners by (value desc, index asc) so ties break deterministically.
    order = np.lexsort((part, -vals), axis=-1)
    return np.take_along_axis(part, order, axis=-1)


def _one_hot_marginals(order: np.ndarray, n: int) -> np.ndarray:
    """(B, K) deterministic slates -> (B, K, N) marginals of 0/1."""
    b, k = order.shape
    out = np.zeros((b, k, n))
    np.put_along_axis(out, order[:, :, None], 1.0, axis=2)
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


# ------------------------------------------------------------------ policies


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


class _DeterministicPolicy(Policy):
    """Shows the top K of a ranking key; every propensity is 1."""

    def _keys(self, z: np.ndarray, st: Stats) -> np.ndarray:
        raise NotImplementedError

    def _dist(self, z, st, valid, k, rng):
        keys = np.where(valid, self._keys(z, st), -np.inf)
        return _one_hot_marginals(_topk_order(keys, k), z.shape[1])

    def _sample(self, z, st, k, rng, with_prop):
        idx = _topk_order(self._keys(z[None], st.row()), k)[0]
        return idx, (np.ones(k) if with_prop else None)


class GreedyPolicy(_DeterministicPolicy):
    """Pure exploitation: the K highest model scores."""

    type = "greedy"

    def _keys(self, z, st):
        return z


class UCBPolicy(_DeterministicPolicy):
    """Optimism: mean + c * sqrt(log(t + 1) / n); items never shown rank first when c > 0.

    feedback "counts": mean = (w * p + clicks) / (w + n), the model's click
    probability p worth w impressions, pooled with the item's observed clicks.
    feedback "lift": mean = p * (w + clicks) / (w + expected clicks), the user's own
    p scaled by the item's learned lift; c = 0 is greedy with learning.
    """

    type = "ucb"

    def _keys(self, z, st):
        p = self.prior_mean(z)
        if self.config.feedback == "lift":
            shape, rate = self.lift_posterior(st)
            mean = p * shape / rate
        else:
            w = self.config.prior_strength
            mean = (w * p + st.c) / (w + st.n)
        if self.config.ucb_c == 0:
            return mean
        t = max(self.state.total, 1)
        with np.errstate(divide="ignore"):
            bonus = np.where(st.n > 0, self.config.ucb_c * np.sqrt(np.log(t + 1.0) / np.maximum(st.n, 1)), np.inf)
        # Unseen items (bonus inf) are ordered among themselves by their mean.
        return np.where(np.isinf(bonus), 1e6 + mean, mean + bonus)


class EpsilonGreedyPolicy(Policy):
    """With probability epsilon a uniformly random slate, else the greedy one.

    Slate-level mixing gives exact marginals: (1 - eps) * 1[greedy] + eps / N_valid.
    """

    type = "epsilon_greedy"

    def _dist(self, z, st, valid, k, rng):
        eps = self.config.epsilon
        greedy = _one_hot_marginals(_topk_order(np.where(valid, z, -np.inf), k), z.shape[1])
        uniform = valid[:, None, :] / valid.sum(axis=1)[:, None, None]
        return (1 - eps) * greedy + eps * np.broadcast_to(uniform, greedy.shape)

    def _sample(self, z, st, k, rng, with_prop):
        eps, nc = self.config.epsilon, len(z)
        greedy = _topk_order(z[None], k)[0]
        explore = eps > 0 and rng.random() < eps
        idx = rng.permutation(nc)[:k] if explore else greedy
        if not with_prop:
            return idx, None
        return idx, (1 - eps) * (idx == greedy) + eps / nc


class SoftmaxPolicy(Policy):
    """Boltzmann exploration: a Plackett-Luce slate with weights exp(z / temperature).

    Sampled with the Gumbel top-k trick; K = 1 marginals are the softmax itself,
    K > 1 marginals are Monte Carlo (n_sim draws).
    """

    type = "softmax"

    def _dist(self, z, st, valid, k, rng):
        zt = np.where(valid, z / self.config.temperature, -np.inf)
        if k == 1:
            e = np.exp(zt - zt.max(axis=1, keepdims=True))
            return (e / e.sum(axis=1, keepdims=True))[:, None, :]
        return _mc_marginals(
            lambda ins, g, size: ins[0] + g.gumbel(size=size),
            [z / self.config.temperature],
            valid,
            k,
            self.config.n_sim,
            rng,
        )

    def _sample(self, z, st, k, rng, with_prop):
        zt = z / self.config.temperature
        idx = _topk_order((zt + rng.gumbel(size=z.shape))[None], k)[0]
        if not with_prop:
            return idx, None
        if k == 1:
            e = np.exp(zt - zt.max())
            return idx, (e / e.sum())[idx]
        u = _quantile_points(self.config.quad_points)
        x = zt[idx][:, None] - np.log(-np.log(u))[None, :]  # Gumbel quantiles of each shown item's key

        def sf(xx: np.ndarray) -> np.ndarray:  # P(key_l > x) for every candidate l
            return -np.expm1(-np.exp(-(xx[..., None] - zt)))

        return idx, _rank_probabilities(idx, x, sf)


class ThompsonPolicy(Policy):
    """Thompson sampling; the model's click probability p is the prior mean.

    feedback "counts" (Beta-Bernoulli): item j's key is a draw from
    Beta(w * p_j + clicks_j, w * (1 - p_j) + impressions_j - clicks_j), w = prior_strength.
    feedback "lift": the key is p_j * lift_j with lift_j ~ Gamma(w + clicks_j, rate w +
    expected_j), so the user's own p is kept and the item's feedback rescales it.
    A slate is the top K of one draw per item; marginals are Monte Carlo over n_sim draws.
    """

    type = "thompson"

    def posterior(self, z: np.ndarray, n: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(alpha, beta) of each candidate's Beta posterior (feedback "counts")."""
        w = self.config.prior_strength
        p = self.prior_mean(z)
        return w * p + c, w * (1 - p) + (n - c)

    def _params(self, z: np.ndarray, st: Stats) -> list[np.ndarray]:
        if self.config.feedback == "lift":
            shape, rate = self.lift_posterior(st)
            return [self.prior_mean(z) / rate, shape]  # key = p * Gamma(shape, 1) / rate
        return list(self.posterior(z, st.n, st.c))

    def _draw(self, params: list[np.ndarray], g: np.random.Generator, size: Any) -> np.ndarray:
        if self.config.feedback == "lift":
            return params[0] * g.standard_gamma(params[1], size=size)
        return g.beta(params[0], params[1], size=size)

    def _dist(self, z, st, valid, k, rng):
        return _mc_marginals(self._draw, self._params(z, st), valid, k, self.config.n_sim, rng)

    def _sample(self, z, st, k, rng, with_prop):
        params = self._params(z, st)
        idx = _topk_order(self._draw(params, rng, z.shape)[None], k)[0]
        if not with_prop:
            return idx, None
        from scipy import special

        u = _quantile_points(self.config.quad_points)
        a, b = params
        if self.config.feedback == "lift":  # key_l = a_l * Gamma(b_l): quantile a * P^-1(b, u), tail Q(b, x / a)
            x = a[idx][:, None] * special.gammaincinv(b[idx][:, None], u[None, :])

            def sf(xx: np.ndarray) -> np.ndarray:
                return special.gammaincc(b, xx[..., None] / a)
        else:
            x = special.betaincinv(a[idx][:, None], b[idx][:, None], u[None, :])  # quantiles of each shown item's draw

            def sf(xx: np.ndarray) -> np.ndarray:
                return special.betainc(b, a, 1.0 - xx[..., None])  # = P(Beta(a, b) > x); faster than betaincc

        return idx, _rank_probabilities(idx, x, sf)


def _mc_marginals(
    draw: Any, inputs: list[np.ndarray], valid: np.ndarray, k: int, n_sim: int, rng: np.random.Generator
) -> np.ndarray:
    """Monte Carlo (B, K, N) marginals of 'top K of one random draw per candidate'.

    `inputs` are (B, N) parameter arrays; `draw(inputs sliced to (rows, 1, N), rng, size)`
    returns keys of shape `size` = (rows, S, N). Rows with identical inputs are
    simulated once (contexts repeat in logged data).
    """
    b, nc = valid.shape
    stacked = np.concatenate([*inputs, valid], axis=1)
    uniq, first, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    ins, vu = [a[first] for a in inputs], valid[first]
    counts = np.zeros((len(uniq), k, nc))
    rows_per_chunk = max(1, _MC_CHUNK_ELEMENTS // max(1, n_sim * nc))
    for lo in range(0, len(uniq), rows_per_chunk):
        hi = min(len(uniq), lo + rows_per_chunk)
        sims_per_chunk = max(1, _MC_CHUNK_ELEMENTS // ((hi - lo) * nc))
        done = 0
        while done < n_sim:
            s = min(sims_per_chunk, n_sim - done)
            keys = draw([a[lo:hi, None, :] for a in ins], rng, (hi - lo, s, nc))
            keys = np.where(vu[lo:hi, None, :], keys, -np.inf)
            top = _topk_order(keys, k)  # (rows, s, k)
            rows = np.arange(hi - lo)[:, None]
            for pos in range(k):
                flat = (rows * nc + top[:, :, pos]).ravel()
                counts[lo:hi, pos, :] += np.bincount(flat, minlength=(hi - lo) * nc).reshape(hi - lo, nc)
            done += s
    return (counts / n_sim)[inverse.ravel()]


def _quantile_points(q: int) -> np.ndarray:
    """Midpoints of q equal-probability bins: a quadrature rule for E[f(X)] = mean f(F^-1(u))."""
    return (np.arange(q) + 0.5) / q


def _rank_probabilities(idx: np.ndarray, x: np.ndarray, sf: Any) -> np.ndarray:
    """P(item idx[k] is ranked k-th) when every candidate's key is an independent draw.

    x (K, Q): quantile points of each shown item's key distribution; sf(x) (K, Q, N):
    P(key_l > x) for every candidate l. P(rank k) = E_x[P(exactly k others exceed x)],
    a Poisson-binomial term computed by dynamic programming: exact in the other
    items, quadrature in the item's own key. Used for logged propensities, where
    Monte Carlo noise would bias 1 / propensity upwards.
    """
    k = len(idx)
    s = sf(x)  # (K, Q, N)
    s[np.arange(k), :, idx] = 0.0  # an item does not compete with itself
    dp = np.zeros(x.shape + (k,))
    dp[..., 0] = 1.0
    for j in range(s.shape[2]):
        sl = s[:, :, j : j + 1]
        shifted = np.concatenate([np.zeros(x.shape + (1,)), dp[..., :-1]], axis=-1)
        dp = dp * (1 - sl) + shifted * sl
    probs = dp.mean(axis=1)  # (K, K): row = shown item, column = number of items above it
    return np.clip(probs[np.arange(k), np.arange(k)], 1e-12, 1.0)


_POLICIES: dict[str, type[Policy]] = {
    "greedy": GreedyPolicy,
    "epsilon_greedy": EpsilonGreedyPolicy,
    "softmax": SoftmaxPolicy,
    "ucb": UCBPolicy,
    "thompson": ThompsonPolicy,
}


def build_policy(config: PolicyConfig | Mapping[str, Any], state: PolicyState | None = None) -> Policy:
    """A policy from a config object or a plain dict (validated: bad keys raise ConfigError)."""
    cfg = config if isinstance(config, PolicyConfig) else PolicyConfig.from_dict(config)
    return _POLICIES[cfg.type](cfg, state)


def policy_from_dict(data: Mapping[str, Any]) -> Policy:
    """Inverse of `Policy.to_dict`; also accepts a bare config mapping (no state)."""
    if "config" not in data:
        return build_policy(data)
    if data.get("format", POLICY_FORMAT) != POLICY_FORMAT:
        raise ValueError(f"not an lmrec exploration policy: format {data.get('format')!r}")
    version = int(data.get("format_version", POLICY_FORMAT_VERSION))
    if version > POLICY_FORMAT_VERSION:
        raise ValueError(f"policy format version {version} is newer than this code ({POLICY_FORMAT_VERSION})")
    state = PolicyState.from_dict(data["state"]) if data.get("state") else None
    return build_policy(data["config"], state)


def policy_from_json(text: str) -> Policy:
    return policy_from_dict(json.loads(text))


# ------------------------------------------------------------------ exact Thompson marginals


def beta_topk_marginals_exact(alpha: np.ndarray, beta: np.ndarray, k: int, points_per_item: int = 400) -> np.ndarray:
    """(N, K) exact P(item j ranks k-th) when item j's key is an independent Beta(alpha_j, beta_j) draw.

    P(j at rank k) = integral of f_j(x) * P(exactly k - 1 other keys exceed x) dx; the
    inner probability is a Poisson-binomial term computed from prefix and suffix
    dynamic programmes (O(G * N * K^2) for G grid points). The grid is the union
    of each item's quantiles, so peaked posteriors are resolved. Used to check
    the Monte Carlo marginals and to evaluate Bernoulli-TS without simulation noise.
    """
    from scipy import special, stats

    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    nc = len(alpha)
    q = np.linspace(0.0, 1.0, points_per_item + 2)[1:-1]
    q = np.concatenate([[1e-12, 1e-9, 1e-6], q, [1 - 1e-6, 1 - 1e-9, 1 - 1e-12]])
    grid = np.unique(np.clip(stats.beta.ppf(q[None, :], alpha[:, None], beta[:, None]).ravel(), 0.0, 1.0))
    grid = np.unique(np.concatenate([[0.0, 1.0], grid]))
    # Densities via log-space (stable for large alpha, beta); survival via the regularised incomplete beta.
    with np.errstate(divide="ignore", invalid="ignore"):
        logpdf = (
            (alpha - 1) * np.log(grid[:, None]) + (beta - 1) * np.log1p(-grid[:, None]) - special.betaln(alpha, beta)
        )
    pdf = np.nan_to_num(np.exp(logpdf), nan=0.0, posinf=0.0)
    sf = special.betainc(beta, alpha, 1.0 - grid[:, None])  # (G, N) P(key_j > x) by I_{1-x}(b, a) = 1 - I_x(a, b)
    g = len(grid)
    # prefix[j]: distribution of #exceeders among items < j (truncated to K terms); suffix likewise.
    prefix = np.zeros((nc + 1, g, k))
    prefix[0, :, 0] = 1.0
    for j in range(nc):
        s = sf[:, j : j + 1]
        prefix[j + 1] = prefix[j] * (1 - s)
        prefix[j + 1, :, 1:] += prefix[j, :, :-1] * s
    suffix = np.zeros((nc + 1, g, k))
    suffix[nc, :, 0] = 1.0
    for j in range(nc - 1, -1, -1):
        s = sf[:, j : j + 1]
        suffix[j] = suffix[j + 1] * (1 - s)
        suffix[j, :, 1:] += suffix[j + 1, :, :-1] * s
    out = np.zeros((nc, k))
    for j in range(nc):
        # P(exactly m others exceed x) = sum_a prefix_a * suffix_{m-a}
        others = np.zeros((g, k))
        for m in range(k):
            others[:, m] = (prefix[j, :, : m + 1] * suffix[j + 1, :, m::-1]).sum(axis=1)
        out[j] = np.trapezoid(pdf[:, j : j + 1] * others, grid, axis=0)
    return out / out.sum(axis=0, keepdims=True)  # remove quadrature error (columns are distributions)
