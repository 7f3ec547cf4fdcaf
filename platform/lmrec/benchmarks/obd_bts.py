"""The OBP paper's check on the Open Bandit Dataset: estimate Bernoulli-TS's click rate from the Random logs.

Protocol (Saito et al., arXiv:2008.07146, and obp's `examples/quickstart/obd.ipynb`):
behaviour = Random, evaluation = Bernoulli-TS with ZOZOTOWN's prior (campaign
"all"), whose action distribution comes from 100,000 simulated rankings; the
ground truth is the mean click of BTS's own logs; error = |V_hat - V| / V.
The reward models are the library's (`lmrec.exploration.open_bandit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmrec.benchmarks.obd_prior import ZOZOTOWN_BTS_PRIOR
from lmrec.data.open_bandit import LEN_LIST, OBDLog, load_obd
from lmrec.exploration.estimators import ESTIMATORS, Estimate, OPEData, evaluate
from lmrec.exploration.open_bandit import OBDRewards, RewardModelName, fit_obd_rewards
from lmrec.exploration.policies import beta_topk_marginals_exact

# ------------------------------------------------------------------ evaluation policy


def bts_prior(campaign: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """ZOZOTOWN's Beta prior (alpha, beta) per item for `campaign`."""
    p = ZOZOTOWN_BTS_PRIOR[campaign]
    return np.asarray(p["alpha"], dtype=np.float64), np.asarray(p["beta"], dtype=np.float64)


def bts_action_dist(
    campaign: str = "all",
    len_list: int = LEN_LIST,
    n_sim: int = 100_000,
    seed: int = 12345,
    method: Literal["mc", "exact"] = "mc",
) -> np.ndarray:
    """(n_actions, len_list) P(item a at position k) under Bernoulli-TS from the prior.

    "mc": the published protocol, n_sim rankings of one Beta draw per item, drawn from
    the stream that defines the evaluation policy: obp's `BernoulliTS(random_state=seed)`
    draws `RandomState(seed).beta(alpha, beta)` once per simulated ranking and shows the
    items in descending order of their draws (obp/policy/contextfree.py,
    `compute_batch_action_dist`). The legacy generator fills an array element by element
    from one stream, so (chunk, n_actions) draws at once equal chunk such calls in a row;
    for seed 12345 the result is identical to obp's stored distribution (tests/data).
    "exact": numerical integration, no simulation noise.
    """
    alpha, beta = bts_prior(campaign)
    if method == "exact":
        return beta_topk_marginals_exact(alpha, beta, len_list)
    if method != "mc":
        raise ValueError(f"method must be 'mc' or 'exact', got {method!r}")
    rng = np.random.RandomState(seed)
    n = len(alpha)
    counts = np.zeros((len_list, n))
    for lo in range(0, n_sim, _MC_CHUNK):
        draws = rng.beta(alpha, beta, size=(min(_MC_CHUNK, n_sim - lo), n))
        shown = np.argsort(draws, axis=1)[:, ::-1][:, :len_list]  # obp's order: argsort, reversed
        for k in range(len_list):
            counts[k] += np.bincount(shown[:, k], minlength=n)
    return (counts / n_sim).T


_MC_CHUNK = 10_000  # rankings per block of draws (80 items: 6.4 MB)


# ------------------------------------------------------------------ the OBP paper's check


def ope_data(log: OBDLog, dist: np.ndarray, rewards: OBDRewards | None = None) -> OPEData:
    """OPEData for an evaluation policy given as (n_actions, K) or per-sample (n, K, n_actions)."""
    rows = np.arange(log.n)
    if dist.ndim == 2:  # context-free: same distribution for every sample
        if dist.shape != (log.n_actions, log.len_list):
            raise ValueError(f"dist must be (n_actions={log.n_actions}, len_list={log.len_list}), got {dist.shape}")
        pi_e = dist[log.actions, log.positions]
        at_pos = dist[:, log.positions].T  # (n, n_actions)
    else:
        if dist.shape != (log.n, log.len_list, log.n_actions):
            raise ValueError(f"dist must be (n={log.n}, len_list, n_actions), got {dist.shape}")
        pi_e = dist[rows, log.positions, log.actions]
        at_pos = dist[rows, log.positions, :]
    if rewards is None:
        return OPEData(log.rewards, log.pscore, pi_e)
    return OPEData(log.rewards, log.pscore, pi_e, at_pos, rewards.fit.q_hat, rewards.fit.q_logged)


@dataclass
class OBDBenchmark:
    """Estimates of V(BTS) from the Random logs and their errors against BTS's own CTR."""

    truth: float
    behavior_value: float
    estimates: dict[str, Estimate]
    dist: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                **e.to_dict(),
                "relative_error": e.relative_error(self.truth),
                "relative_to_behavior": e.value / self.behavior_value,
            }
            for e in self.estimates.values()
        ]


def evaluate_bts_from_random(
    data_dir: str | Path | None = None,
    campaign: str = "all",
    n_sim: int = 100_000,
    seed: int = 12345,
    method: Literal["mc", "exact"] = "mc",
    n_folds: int = 3,
    l2: float | Literal["auto"] = "auto",
    n_bootstrap: int = 10_000,
    estimators: tuple[str, ...] = ESTIMATORS,
    dist: np.ndarray | None = None,
    reward_model: RewardModelName = "lmrec",
) -> OBDBenchmark:
    """The OBP paper's check on the sample: V(BTS) estimated from Random logs vs BTS's CTR."""
    random_log = load_obd(data_dir, "random", campaign)
    bts_log = load_obd(data_dir, "bts", campaign)
    if dist is None:
        dist = bts_action_dist(campaign, random_log.len_list, n_sim, seed, method)
    need_model = any(e in ("dm", "dr") for e in estimators)
    rewards = (
        fit_obd_rewards(random_log, n_folds, l2, seed, with_scores=False, reward_model=reward_model)
        if need_model
        else None
    )
    data = ope_data(random_log, dist, rewards)
    est = evaluate(data, estimators, n_bootstrap=n_bootstrap, seed=seed)
    settings = dict(
        campaign=campaign,
        n_sim=n_sim,
        seed=seed,
        method=method,
        n_folds=n_folds,
        reward_model=reward_model,
        l2=rewards.fit.l2 if rewards else None,
        reward_model_oof_log_loss=rewards.fit.oof_log_loss if rewards else None,
        n_bootstrap=n_bootstrap,
        n_random=random_log.n,
        n_bts=bts_log.n,
    )
    return OBDBenchmark(bts_log.on_policy_value, random_log.on_policy_value, est, dist, settings)
