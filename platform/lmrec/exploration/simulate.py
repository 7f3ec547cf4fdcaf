"""A synthetic slate bandit with a known click model, for tests, demos and examples.

Item j has a true click-through log-odds q_j; position k multiplies the click
probability by `position_decay ** k` (users look less further down). The model
scores a request's candidates with q_j + a fixed per-item bias + per-request
noise, so a policy that learns from feedback can beat the model's ranking.
Because the click model is known, a policy's true value is computed exactly from
its marginals: the ground truth the estimators are checked against.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from lmrec.exploration.logs import FeedbackLogWriter, FeedbackRecord
from lmrec.exploration.policies import Policy


@dataclass
class SyntheticBandit:
    """Catalog of `num_items` with true CTRs; each request offers `num_candidates` of them."""

    num_items: int = 200
    num_candidates: int = 20
    slate_size: int = 3
    base_ctr: float = 0.05  # mean click probability at position 0
    quality_std: float = 1.0  # spread of items' true log-odds
    model_bias_std: float = 0.7  # the model's fixed per-item error (what feedback can fix)
    model_noise_std: float = 0.3  # per-request scoring noise
    position_decay: float = 0.8
    seed: int = 0
    quality: np.ndarray = field(init=False, repr=False)
    bias: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 1])
        logit0 = np.log(self.base_ctr / (1 - self.base_ctr))
        self.quality = logit0 + self.quality_std * rng.standard_normal(self.num_items)
        self.bias = self.model_bias_std * rng.standard_normal(self.num_items)

    def ctr(self, items: np.ndarray, positions: np.ndarray | int = 0) -> np.ndarray:
        """True click probability of `items` shown at `positions`."""
        p = 1.0 / (1.0 + np.exp(-self.quality[np.asarray(items)]))
        return p * self.position_decay ** np.asarray(positions)

    def requests(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(n, N) candidate ids and the model's scores for them."""
        rng = np.random.default_rng([self.seed, 2, seed])
        cands = np.argsort(rng.random((n, self.num_items)), axis=1)[:, : self.num_candidates]
        scores = self.quality[cands] + self.bias[cands] + self.model_noise_std * rng.standard_normal(cands.shape)
        return cands.astype(np.int64), scores

    def true_value(self, policy: Policy, candidates: np.ndarray, scores: np.ndarray, k: int | None = None) -> float:
        """Exact expected reward per shown position of `policy` on these requests."""
        k = k or self.slate_size
        dist = policy.action_dist(scores, k, candidates=candidates)  # (n, K, N)
        ctr = self.ctr(candidates[:, None, :], np.arange(k)[None, :, None])  # (n, K, N)
        return float((dist * ctr).sum(axis=2).mean())

    def simulate(
        self,
        policy: Policy,
        n_requests: int,
        writer: FeedbackLogWriter | None = None,
        seed: int = 0,
        learn: bool = False,
        start: dt.datetime | None = None,
        seconds_between: float = 30.0,
        model_version: str = "synthetic",
    ) -> list[FeedbackRecord]:
        """Serve `n_requests` with `policy`, draw clicks, and log them (rewards joined)."""
        rng = np.random.default_rng([self.seed, 3, seed])
        cands, scores = self.requests(n_requests, seed)
        start = start or dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        params = policy.config.to_dict()
        records = []
        for i in range(n_requests):
            slate = policy.choose(cands[i], scores[i], self.slate_size, key=f"{seed}-{i}")
            clicks = (rng.random(len(slate.items)) < self.ctr(slate.items, np.arange(len(slate.items)))).astype(float)
            if learn:
                policy.update(slate.items, clicks, scores=scores[i, slate.indices])
            records.append(
                FeedbackRecord(
                    request_id=f"req-{seed}-{i}",
                    candidates=cands[i].tolist(),
                    scores=scores[i].tolist(),
                    slate=slate.items.tolist(),
                    propensities=slate.propensities.tolist(),  # type: ignore[union-attr]
                    policy=policy.type,
                    policy_params=params,
                    timestamp=start + dt.timedelta(seconds=seconds_between * i),
                    user_id=f"u{i % 97}",
                    model_version=model_version,
                    rewards=clicks.tolist(),
                )
            )
        if writer is not None:
            writer.write(records)
        return records
