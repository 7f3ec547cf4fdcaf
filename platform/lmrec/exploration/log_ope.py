"""Off-policy evaluation of a policy on our own feedback logs.

The logs carry every request's candidates and scores, so the evaluation
policy's marginals can be recomputed for each logged request: pi_e(slate[k] at
k) for IPS/SNIPS and the whole distribution at position k for DM/DR. One sample
is one (request, position) pair, as in the Open Bandit Dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmrec.exploration.estimators import ESTIMATORS, Estimate, OPEData, evaluate
from lmrec.exploration.logs import FeedbackLogError, slate_candidate_index, validate_table
from lmrec.exploration.policies import Policy, PolicyState
from lmrec.exploration.reward_model import CrossFitRewards, FeatureFn, cross_fit_rewards, select_cross_fit


@dataclass
class LoggedSlates:
    """Feedback logs flattened to samples, with each request's padded candidate arrays."""

    row: np.ndarray  # (n,) request of each sample
    rank: np.ndarray  # (n,) slate index k of each sample
    action: np.ndarray  # (n,) index of the shown item in its request's candidates
    reward: np.ndarray  # (n,)
    pscore: np.ndarray  # (n,) logged propensity
    candidates: np.ndarray  # (R, A) item ids, -1 padding
    scores: np.ndarray  # (R, A) model scores, 0 padding
    mask: np.ndarray  # (R, A) valid candidates
    slate_len: np.ndarray  # (R,)

    @property
    def n(self) -> int:
        return len(self.row)

    @property
    def max_slate(self) -> int:
        return int(self.slate_len.max())

    @classmethod
    def from_table(cls, table: pa.Table, source: str = "<logs>", drop_unrewarded: bool = False) -> LoggedSlates:
        """Validate and flatten; rows without joined rewards raise unless `drop_unrewarded`."""
        validate_table(table, source)
        missing = table["rewards"].null_count
        if missing:
            if not drop_unrewarded:
                raise FeedbackLogError(
                    source,
                    "rewards",
                    f"{missing} of {table.num_rows} row(s) have no rewards joined yet (join_rewards first, or drop_unrewarded=True)",
                )
            table = table.filter(pc.invert(pc.is_null(table["rewards"])))
        if table.num_rows == 0:
            raise FeedbackLogError(source, None, "no rows with rewards")
        k = pc.list_value_length(table["slate"]).to_numpy().astype(np.int64)
        nc = pc.list_value_length(table["candidates"]).to_numpy().astype(np.int64)
        r, a = table.num_rows, int(nc.max())
        row = np.repeat(np.arange(r), k)
        rank = np.arange(int(k.sum())) - np.repeat(np.concatenate([[0], np.cumsum(k)[:-1]]), k)
        cand_flat = pc.list_flatten(table["candidates"]).to_numpy()
        score_flat = pc.list_flatten(table["scores"]).to_numpy(zero_copy_only=False).astype(np.float64)
        crow = np.repeat(np.arange(r), nc)
        cpos = np.arange(len(cand_flat)) - np.repeat(np.concatenate([[0], np.cumsum(nc)[:-1]]), nc)
        candidates = np.full((r, a), -1, dtype=np.int64)
        scores = np.zeros((r, a))
        mask = np.zeros((r, a), dtype=bool)
        candidates[crow, cpos] = cand_flat
        scores[crow, cpos] = score_flat
        mask[crow, cpos] = True
        reward = pc.list_flatten(table["rewards"]).to_numpy(zero_copy_only=False).astype(np.float64)
        pscore = pc.list_flatten(table["propensities"]).to_numpy(zero_copy_only=False).astype(np.float64)
        action = slate_candidate_index(table)
        return cls(row, rank, action, reward, pscore, candidates, scores, mask, k)

    def take(self, requests: np.ndarray) -> tuple[LoggedSlates, np.ndarray]:
        """The logs of `requests` (indices into the padded arrays, kept in the given order),
        and the indices of their samples in this object (to subset per-sample arrays)."""
        requests = np.asarray(requests, dtype=np.int64)
        new_row = np.full(len(self.slate_len), -1, dtype=np.int64)
        new_row[requests] = np.arange(len(requests))
        samples = np.flatnonzero(new_row[self.row] >= 0)
        samples = samples[np.argsort(new_row[self.row[samples]], kind="stable")]
        sub = LoggedSlates(
            row=new_row[self.row[samples]],
            rank=self.rank[samples],
            action=self.action[samples],
            reward=self.reward[samples],
            pscore=self.pscore[samples],
            candidates=self.candidates[requests],
            scores=self.scores[requests],
            mask=self.mask[requests],
            slate_len=self.slate_len[requests],
        )
        return sub, samples

    def split(self, warm_frac: float) -> tuple[LoggedSlates, LoggedSlates, np.ndarray]:
        """(earliest `warm_frac` of the requests, the rest, the rest's sample indices in self).

        Requests are taken in their stored order, which `prepare_logs` and the OBD reader keep
        in time order: a stateful policy learns from the first part and is scored on the second.
        """
        if not 0 < warm_frac < 1:
            raise ValueError(f"warm_frac must be in (0, 1), got {warm_frac}")
        r = len(self.slate_len)
        cut = int(round(warm_frac * r))
        if cut < 1 or cut >= r:
            raise ValueError(f"warm_frac {warm_frac} of {r} request(s) leaves an empty part")
        warm, _ = self.take(np.arange(cut))
        rest, samples = self.take(np.arange(cut, r))
        return warm, rest, samples


def policy_marginals(logged: LoggedSlates, policy: Policy) -> np.ndarray:
    """(R, K_max, A) P(candidate a at position k) of `policy` on every logged request."""
    r, a = logged.scores.shape
    kmax = logged.max_slate
    out = np.zeros((r, kmax, a))
    for k in np.unique(logged.slate_len):  # the marginal at position k does not depend on K beyond k
        rows = np.flatnonzero(logged.slate_len == k)
        out[rows, :k, :] = policy.action_dist(
            logged.scores[rows],
            int(k),
            candidates=np.where(logged.mask[rows], logged.candidates[rows], 0),
            mask=logged.mask[rows],
        )
    return out


def log_features(logged: LoggedSlates) -> FeatureFn:
    """features(samples, candidates): score, score rank within the request, position one-hot."""
    order = np.argsort(-np.where(logged.mask, logged.scores, -np.inf), axis=1, kind="stable")
    rank_of = np.empty_like(order)
    np.put_along_axis(rank_of, order, np.arange(order.shape[1])[None, :], axis=1)
    kmax = logged.max_slate

    def fn(samples: np.ndarray, actions: np.ndarray) -> np.ndarray:
        rows = logged.row[samples]
        pos = np.zeros((len(samples), kmax))
        pos[np.arange(len(samples)), logged.rank[samples]] = 1.0
        s = logged.scores[rows, actions][:, None]
        inv_rank = 1.0 / (1.0 + rank_of[rows, actions][:, None])
        return np.hstack([s, inv_rank, pos])

    return fn


def fit_log_rewards(logged: LoggedSlates, n_folds: int = 3, l2: float | str = "auto", seed: int = 0) -> CrossFitRewards:
    """Cross-fitted click model over every (sample, candidate) pair of the logs."""
    feats = log_features(logged)
    mask = logged.mask[logged.row]
    a = logged.scores.shape[1]
    if l2 == "auto":
        return select_cross_fit(feats, logged.action, logged.reward, a, n_folds=n_folds, seed=seed, mask=mask)
    return cross_fit_rewards(feats, logged.action, logged.reward, a, n_folds, float(l2), seed, mask)


def evaluate_policy_on_logs(
    logged: LoggedSlates,
    policy: Policy,
    estimators: Sequence[str] = ESTIMATORS,
    rewards: CrossFitRewards | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_weight: float | None = None,
    cluster_by_request: bool = False,
) -> dict[str, Estimate]:
    """Estimate `policy`'s mean reward per shown position from logs written by another policy.

    `cluster_by_request` bootstraps whole requests instead of single (request, position)
    samples: the positions of one slate share a user and a moment, so their rewards are
    correlated and per-sample resampling understates the interval."""
    dist = policy_marginals(logged, policy)
    at_pos = dist[logged.row, logged.rank, :]
    pi_e = at_pos[np.arange(logged.n), logged.action]
    need_model = any(e in ("dm", "dr") for e in estimators)
    if need_model and rewards is None:
        rewards = fit_log_rewards(logged, seed=seed)
    data = OPEData(
        logged.reward,
        logged.pscore,
        pi_e,
        at_pos if need_model else None,
        rewards.q_hat if need_model and rewards else None,
        rewards.q_logged if need_model and rewards else None,
    )
    return evaluate(
        data,
        estimators,
        n_bootstrap=n_bootstrap,
        seed=seed,
        max_weight=max_weight,
        groups=logged.row if cluster_by_request else None,
    )


def subset_rewards(rewards: CrossFitRewards, samples: np.ndarray) -> CrossFitRewards:
    """The reward model's predictions for `samples` only (see `LoggedSlates.take`)."""
    import dataclasses

    return dataclasses.replace(
        rewards,
        q_hat=rewards.q_hat[samples],
        logits=rewards.logits[samples],
        q_logged=rewards.q_logged[samples],
        folds=rewards.folds[samples],
    )


def state_from_samples(logged: LoggedSlates, policy: Policy) -> PolicyState:
    """The statistics `policy` would hold after the feedback in `logged`: one impression per
    shown item, a click where its reward is positive, and (for `feedback: lift`) the model's
    click probability of the item's logged score as the expected click."""
    from lmrec.exploration.policies import feedback_state

    items = logged.candidates[logged.row, logged.action]
    expected = policy.click_probability(logged.scores[logged.row, logged.action])
    return feedback_state(items, (logged.reward > 0).astype(float), expected)


def state_from_logs(
    table: pa.Table, policy: Policy, source: str = "<logs>", drop_unrewarded: bool = True
) -> PolicyState:
    """The policy state that a feedback log amounts to: every shown item is one impression,
    its joined reward a click or not, and (for `feedback: lift`) the model's click probability
    from its logged score the expected click. Use it to warm-start or rebuild serving state."""
    return state_from_samples(LoggedSlates.from_table(table, source, drop_unrewarded), policy)
