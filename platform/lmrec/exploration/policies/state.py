"""Per-item feedback statistics a policy learns from, mergeable across replicas by addition."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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
