"""Replay simulator on MovieLens-style interactions: a policy learns online over a
trained model's candidates, and we record cumulative reward and regret.

Protocol. Interactions (user, item, ts, rating) are replayed in time order. A
decision point is a user at interaction j (every `stride`-th interaction of the
user, after `min_history`): the model scores the user's history items[:j], the
candidates are its top-N unseen items, and the policy shows K of them. A shown
item is clicked when the user rates it >= `click_threshold` within their next
`horizon` interactions (j .. j + horizon - 1). With horizon <= stride the windows
of one user do not overlap, so one future positive is clicked at most once.
The policy then learns from the clicks and the next decision point (from any
user) comes. Regret per event is the best achievable clicks, min(K, clickable
candidates), minus the clicks obtained.

Caveat (documented in docs/exploration.md): items the user never rated count as
non-clicks, as in every replay on logged data, so absolute click rates are lower
bounds; comparisons between policies on the same events are what it is for.
Candidate sets are precomputed once (`build_replay_events`) because the model's
scores do not depend on the policy; runs of many policies then take seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from lmrec.exploration.policies import Policy
from lmrec.exploration.reward_model import LogisticRegression


class CatalogScorer(Protocol):
    """Scores every catalog item for each history (histories hold original item ids)."""

    item_ids: np.ndarray  # (C,) original ids of the scored catalog

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:  # (B, C)
        ...


# ------------------------------------------------------------------ scorers


class PopularityScorer:
    """log(1 + count) of each item before a cut-off time: the same scores for every user."""

    def __init__(self, interactions: pa.Table, before_ts: int | None = None) -> None:
        items = interactions["item"].to_numpy()
        if before_ts is not None:
            items = items[interactions["ts"].to_numpy() < before_ts]
        self.item_ids, counts = np.unique(items, return_counts=True)
        self.scores = np.log1p(counts.astype(np.float64))

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.scores, (len(histories), len(self.scores))).copy()


class SeqRecScorer:
    """A trained SeqRecModel's last-position scores over its vocabulary (torch, CPU or GPU)."""

    def __init__(self, model: Any, vocab: list[int], max_len: int, device: str = "cpu") -> None:
        self.model, self.max_len, self.device = model, max_len, device
        self.item_ids = np.asarray(vocab, dtype=np.int64)  # item_idx i + 1 <-> vocab[i]
        self._order = np.argsort(self.item_ids)

    def _to_idx(self, items: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.item_ids, items, sorter=self._order)
        pos = np.clip(pos, 0, len(self.item_ids) - 1)
        known = self.item_ids[self._order[pos]] == items
        return self._order[pos][known] + 1  # items unknown to the model are dropped from the history

    def __call__(self, histories: list[np.ndarray]) -> np.ndarray:
        import torch

        from lmrec.data.sequences import left_pad, trim_padding

        seqs = [self._to_idx(np.asarray(h, dtype=np.int64)) for h in histories]
        (x,) = trim_padding(left_pad(seqs, self.max_len))
        with torch.no_grad():
            scores = self.model(torch.from_numpy(x).to(self.device)).float().cpu().numpy()
        return scores[:, 1:]  # drop the padding column: column i <-> vocab[i]


# ------------------------------------------------------------------ events


@dataclass
class ReplayEvents:
    """Precomputed decision points, in time order."""

    ts: np.ndarray  # (E,) seconds
    users: np.ndarray  # (E,)
    candidates: np.ndarray  # (E, N) original item ids, best model score first
    scores: np.ndarray  # (E, N) raw model scores
    clicks: np.ndarray  # (E, N) bool: would the user click this candidate if shown

    def __len__(self) -> int:
        return len(self.ts)

    def oracle(self, k: int) -> np.ndarray:
        """(E,) the most clicks any slate of k candidates could get."""
        return np.minimum(k, self.clicks.sum(axis=1))

    def subset(self, sel: np.ndarray) -> ReplayEvents:
        return ReplayEvents(self.ts[sel], self.users[sel], self.candidates[sel], self.scores[sel], self.clicks[sel])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp, ts=self.ts, users=self.users, candidates=self.candidates, scores=self.scores, clicks=self.clicks
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReplayEvents:
        with np.load(path, allow_pickle=False) as z:  # plain arrays only: loading runs no code
            return cls(z["ts"], z["users"], z["candidates"], z["scores"], z["clicks"])


def _user_sequences(interactions: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arrays sorted by (user, ts, item) and each user's [start, end) offsets."""
    t = interactions.sort_by([("user", "ascending"), ("ts", "ascending"), ("item", "ascending")])
    users = t["user"].to_numpy()
    starts = np.concatenate([[0], np.flatnonzero(np.diff(users)) + 1, [len(users)]])
    return users, t["item"].to_numpy(), t["ts"].to_numpy(), t["rating"].to_numpy(), starts


def build_replay_events(
    interactions: pa.Table,
    scorer: CatalogScorer,
    start_ts: int,
    end_ts: int,
    num_candidates: int = 50,
    stride: int = 10,
    horizon: int = 10,
    click_threshold: float = 4.0,
    min_history: int = 5,
    max_events: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> ReplayEvents:
    """Decision points with ts in [start_ts, end_ts), their top-N unseen candidates and click labels.

    A decision point where the user has fewer than N unseen catalog items left is skipped.
    """
    users, items, ts, ratings, starts = _user_sequences(interactions)
    points: list[tuple[int, int, int]] = []  # (ts, user row start, j)
    for u in range(len(starts) - 1):
        lo, hi = int(starts[u]), int(starts[u + 1])
        for j in range(lo + min_history, hi, stride):
            if start_ts <= ts[j] < end_ts:
                points.append((int(ts[j]), lo, j))
    if max_events is not None and len(points) > max_events:
        keep = np.sort(np.random.default_rng(seed).choice(len(points), max_events, replace=False))
        points = [points[i] for i in keep]
    points.sort(key=lambda p: (p[0], p[2]))
    catalog = np.asarray(scorer.item_ids, dtype=np.int64)
    cat_order = np.argsort(catalog)
    e = len(points)
    n = min(num_candidates, len(catalog))
    out_c = np.zeros((e, n), dtype=np.int64)
    out_s = np.zeros((e, n), dtype=np.float32)
    out_k = np.zeros((e, n), dtype=bool)
    enough = np.ones(e, dtype=bool)  # False where the user has fewer than N unseen items left
    for b0 in range(0, e, batch_size):
        chunk = points[b0 : b0 + batch_size]
        hists = [items[lo:j] for _, lo, j in chunk]
        scores = np.asarray(scorer(hists), dtype=np.float64)
        for i in range(len(chunk)):
            seen = hists[i]
            pos = np.clip(np.searchsorted(catalog, seen, sorter=cat_order), 0, len(catalog) - 1)
            hit = catalog[cat_order[pos]] == seen
            scores[i, cat_order[pos[hit]]] = -np.inf  # never recommend what the user already rated
        enough[b0 : b0 + len(chunk)] = np.isfinite(scores).sum(axis=1) >= n
        top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
        for i, (_, lo, j) in enumerate(chunk):
            end = min(j + horizon, int(starts[np.searchsorted(starts, lo, side="right")]))
            window = items[j:end][ratings[j:end] >= click_threshold]
            cands = catalog[top[i]]
            out_c[b0 + i], out_s[b0 + i] = cands, scores[i, top[i]]
            out_k[b0 + i] = np.isin(cands, window)
    ev_ts = np.array([p[0] for p in points], dtype=np.int64)
    ev_users = np.array([users[p[1]] for p in points], dtype=np.int64)
    return ReplayEvents(ev_ts, ev_users, out_c, out_s, out_k).subset(enough)


def fit_calibration(events: ReplayEvents, l2: float = 1.0) -> tuple[float, float]:
    """Platt scaling (scale, shift): P(click) = sigmoid(scale * score + shift), fitted on `events`.

    Policies get it as `score_scale`/`score_shift`, so Thompson's prior mean is a
    click probability rather than a raw dot product.
    """
    s = events.scores.ravel().astype(np.float64)
    y = events.clicks.ravel().astype(np.float64)
    ok = np.isfinite(s)
    lr = LogisticRegression(l2=l2).fit(s[ok, None], y[ok])
    scale = float(lr.coef_[0])
    if scale <= 0:  # the model ranks no better than chance here: keep the ranking, flatten the prior
        return 1e-3, float(lr.intercept_)
    return scale, float(lr.intercept_)


# ------------------------------------------------------------------ running a policy


@dataclass
class ReplayResult:
    """Per-event clicks and the best achievable, with cumulative curves."""

    rewards: np.ndarray  # (E,) clicks obtained
    oracle: np.ndarray  # (E,) best achievable clicks
    slate_size: int
    policy: dict[str, Any] = field(default_factory=dict)

    @property
    def cum_reward(self) -> np.ndarray:
        return np.cumsum(self.rewards)

    @property
    def cum_regret(self) -> np.ndarray:
        return np.cumsum(self.oracle - self.rewards)

    def summary(self) -> dict[str, float]:
        e = max(1, len(self.rewards))
        return {
            "events": float(len(self.rewards)),
            "cum_reward": float(self.rewards.sum()),
            "cum_regret": float((self.oracle - self.rewards).sum()),
            "reward_per_event": float(self.rewards.sum() / e),
            "ctr": float(self.rewards.sum() / (e * self.slate_size)),
            "reward_se": float(self.rewards.std(ddof=1) / np.sqrt(e)) if len(self.rewards) > 1 else 0.0,
            "oracle_per_event": float(self.oracle.sum() / e),
        }


def run_replay(
    events: ReplayEvents,
    policy: Policy,
    slate_size: int,
    learn: bool = True,
    report_every: int | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> ReplayResult:
    """Replay `events` in order: choose, observe clicks, learn; `callback(step, summary)` every `report_every`."""
    e = len(events)
    rewards = np.zeros(e)
    oracle = events.oracle(slate_size).astype(np.float64)
    for i in range(e):
        slate = policy.choose(events.candidates[i], events.scores[i], slate_size, with_propensities=False)
        clicks = events.clicks[i, slate.indices].astype(np.float64)
        rewards[i] = clicks.sum()
        if learn:
            policy.update(slate.items, clicks, scores=events.scores[i, slate.indices])
        if callback is not None and report_every and ((i + 1) % report_every == 0 or i + 1 == e):
            callback(i + 1, ReplayResult(rewards[: i + 1], oracle[: i + 1], slate_size).summary())
    return ReplayResult(rewards, oracle, slate_size, policy.config.to_dict())


def plot_curves(results: dict[str, ReplayResult], path: str | Path, title: str = "replay") -> Path:
    """Cumulative reward and regret of several policies on the same events, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, res in results.items():
        x = np.arange(1, len(res.rewards) + 1)
        ax1.plot(x, res.cum_reward, label=name)
        ax2.plot(x, res.cum_regret, label=name)
    ax1.set_title(f"{title}: cumulative clicks")
    ax2.set_title(f"{title}: cumulative regret")
    for ax in (ax1, ax2):
        ax.set_xlabel("event")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summaries_json(results: dict[str, ReplayResult]) -> str:
    return json.dumps({k: {**v.summary(), "policy": v.policy} for k, v in results.items()}, indent=1, sort_keys=True)
