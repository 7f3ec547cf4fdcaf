"""Off-policy estimators: IPS, self-normalised IPS, direct method and doubly robust.

Inputs are per-sample arrays, one sample per (logged slate, position), as in the
Open Bandit Dataset: reward r_i, behaviour propensity p_i of the logged item at
its position, and the evaluation policy's probability pi_i of that item at that
position. DM and DR also take the evaluation policy's whole distribution over
candidates at that position, `action_dist` (n, A), and reward predictions q_hat.

    IPS   = mean(w r)                                w = pi / p
    SNIPS = sum(w r) / sum(w)
    DM    = mean(sum_a pi(a) q_hat(a))
    DR    = mean(sum_a pi(a) q_hat(a) + w (r - q_hat(a_logged)))

Each returns an `Estimate` with a percentile bootstrap confidence interval and
the bootstrap standard error, which the Tune objective penalises. By default the
bootstrap resamples samples (the Open Bandit protocol); with `groups` (e.g. the
request id of each sample) it resamples whole clusters, since the positions of
one slate are correlated and per-sample resampling makes the interval too narrow.
Resampling is vectorised: indices are drawn as (replicates, n) blocks of about
4M elements, so the Python loop runs once per block, which is once per replicate
only when n (or the number of groups) exceeds 4M.

References: Dudik, Langford & Li, "Doubly Robust Policy Evaluation and Learning"
(ICML 2011); Swaminathan & Joachims, "The Self-Normalized Estimator for
Counterfactual Learning" (NeurIPS 2015); Saito et al., Open Bandit Dataset and
Pipeline (arXiv:2008.07146) for the evaluation protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dm", "dr")
_BOOT_CHUNK_ELEMENTS = 4_000_000


@dataclass
class Estimate:
    """A policy-value estimate with its bootstrap interval and standard error."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    std_err: float
    n: int
    confidence: float = 0.95
    n_bootstrap: int = 0

    def relative_error(self, truth: float) -> float:
        """|estimate - truth| / truth (the OBP paper's relative estimation error)."""
        return abs(self.value - truth) / abs(truth)

    def penalised(self, penalty: float) -> float:
        """value - penalty * std_err: a pessimistic score for picking policies."""
        return self.value - penalty * self.std_err

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OPEData:
    """Logged samples plus what the evaluation policy and the reward model say about them."""

    rewards: np.ndarray  # (n,)
    pscore: np.ndarray  # (n,) behaviour propensity of the logged item at its position
    pi_e: np.ndarray  # (n,) evaluation policy's probability of that item at that position
    action_dist: np.ndarray | None = None  # (n, A) evaluation policy at the sample's position
    q_hat: np.ndarray | None = None  # (n, A) predicted reward of each candidate
    q_logged: np.ndarray | None = None  # (n,) predicted reward of the logged item

    def __post_init__(self) -> None:
        check_inputs(self.rewards, self.pscore, self.pi_e)
        if self.action_dist is not None and self.q_hat is not None and self.action_dist.shape != self.q_hat.shape:
            raise ValueError(f"action_dist {self.action_dist.shape} and q_hat {self.q_hat.shape} differ in shape")

    @property
    def n(self) -> int:
        return len(self.rewards)


def check_inputs(rewards: np.ndarray, pscore: np.ndarray, pi_e: np.ndarray) -> None:
    """Shapes agree; behaviour propensities in (0, 1]; evaluation probabilities in [0, 1]."""
    r, p, e = (np.asarray(a) for a in (rewards, pscore, pi_e))
    if not (r.ndim == p.ndim == e.ndim == 1 and len(r) == len(p) == len(e)):
        raise ValueError(f"rewards, pscore, pi_e must be 1-D and equally long, got {r.shape}, {p.shape}, {e.shape}")
    if len(r) == 0:
        raise ValueError("no logged samples")
    bad = ~((p > 0) & (p <= 1))
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} sample(s) have a behaviour propensity outside (0, 1] (first: {p[bad][0]!r})"
        )
    bad = ~((e >= 0) & (e <= 1 + 1e-9))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} sample(s) have an evaluation probability outside [0, 1]")


def _group_index(groups: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """(n,) dense cluster codes 0..G-1 and G, from arbitrary integer cluster ids."""
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"groups must be integer cluster ids, got dtype {g.dtype}")
    uniq, codes = np.unique(g, return_inverse=True)
    return codes.reshape(-1), len(uniq)


def bootstrap(
    values: np.ndarray,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    denominator: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """(ci_low, ci_high, std_err) of mean(values), or of sum(values)/sum(denominator).

    Percentile bootstrap with `n_bootstrap` resamples. Without `groups`, the n samples
    are resampled with replacement. With `groups` ((n,) integer cluster ids), the G
    clusters are resampled whole (cluster bootstrap), and a replicate's statistic is
    sum of its clusters' values / their sample count (or / their denominator sum).
    A replicate whose denominator sums to 0 (SNIPS where every resampled weight is 0)
    has no ratio: it is dropped from the quantiles and the std, so the interval is
    over the remaining replicates; if none remain, all three are NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n_bootstrap <= 0:
        return float("nan"), float("nan"), float("nan")
    den = None if denominator is None else np.asarray(denominator, dtype=np.float64)
    if den is not None and den.shape != values.shape:
        raise ValueError(f"denominator has shape {den.shape}, values {values.shape}")
    rng = np.random.default_rng(seed)
    num_stats = np.empty(n_bootstrap)
    den_stats = np.empty(n_bootstrap)
    if groups is None:
        # one resampled unit per sample; "denominator" is den, or 1 per sample for a mean
        unit_num, unit_den, size = values, den, n
    else:
        codes, size = _group_index(groups, n)
        unit_num = np.bincount(codes, weights=values, minlength=size)
        unit_den = (
            np.bincount(codes, weights=den, minlength=size)
            if den is not None
            else np.bincount(codes, minlength=size).astype(np.float64)
        )
    per = max(1, _BOOT_CHUNK_ELEMENTS // size)
    for lo in range(0, n_bootstrap, per):
        m = min(per, n_bootstrap - lo)
        idx = rng.integers(0, size, size=(m, size))
        if groups is None and den is None:
            num_stats[lo : lo + m] = values[idx].mean(axis=1)  # the historical per-sample path, bit for bit
            den_stats[lo : lo + m] = 1.0
        else:
            num_stats[lo : lo + m] = unit_num[idx].sum(axis=1)
            den_stats[lo : lo + m] = unit_den[idx].sum(axis=1)  # type: ignore[index]
    if groups is None and den is None:
        stats = num_stats
    else:
        ok = den_stats != 0
        stats = num_stats[ok] / den_stats[ok]
        if len(stats) == 0:
            return float("nan"), float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high), float(stats.std(ddof=1)) if len(stats) > 1 else 0.0


def importance_weights(pscore: np.ndarray, pi_e: np.ndarray, max_weight: float | None = None) -> np.ndarray:
    """w = pi_e / pscore, optionally clipped at `max_weight` (trades bias for variance)."""
    w = np.asarray(pi_e, dtype=np.float64) / np.asarray(pscore, dtype=np.float64)
    return np.minimum(w, max_weight) if max_weight is not None else w


def _estimate(
    name: str,
    terms: np.ndarray,
    n_bootstrap: int,
    confidence: float,
    seed: int,
    denominator: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> Estimate:
    """Point value (mean of terms, or ratio to the denominator; 0 if that sums to 0) plus its bootstrap."""
    if denominator is None:
        value = float(terms.mean())
    else:
        den = float(np.sum(denominator))
        value = float(terms.sum() / den) if den > 0 else 0.0
    low, high, se = bootstrap(terms, n_bootstrap, confidence, seed, denominator, groups)
    return Estimate(name, value, low, high, se, len(terms), confidence, n_bootstrap)


def ips(
    rewards: np.ndarray,
    pscore: np.ndarray,
    pi_e: np.ndarray,
    *,
    max_weight: float | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Estimate:
    """Inverse propensity scoring: mean of pi_e / pscore * reward (unbiased, high variance)."""
    check_inputs(rewards, pscore, pi_e)
    w = importance_weights(pscore, pi_e, max_weight)
    return _estimate("ips", w * np.asarray(rewards, dtype=np.float64), n_bootstrap, confidence, seed, groups=groups)


def snips(
    rewards: np.ndarray,
    pscore: np.ndarray,
    pi_e: np.ndarray,
    *,
    max_weight: float | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Estimate:
    """Self-normalised IPS: sum(w r) / sum(w); bounded by the reward range, slightly biased."""
    check_inputs(rewards, pscore, pi_e)
    w = importance_weights(pscore, pi_e, max_weight)
    return _estimate(
        "snips", w * np.asarray(rewards, dtype=np.float64), n_bootstrap, confidence, seed, denominator=w, groups=groups
    )


def dm(
    action_dist: np.ndarray,
    q_hat: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Estimate:
    """Direct method: the reward model's value of the evaluation policy (low variance, biased)."""
    action_dist = np.asarray(action_dist, dtype=np.float64)
    q_hat = np.asarray(q_hat, dtype=np.float64)
    if action_dist.shape != q_hat.shape or action_dist.ndim != 2:
        raise ValueError(f"action_dist and q_hat must both be (n, A), got {action_dist.shape} and {q_hat.shape}")
    return _estimate("dm", (action_dist * q_hat).sum(axis=1), n_bootstrap, confidence, seed, groups=groups)


def dr(
    rewards: np.ndarray,
    pscore: np.ndarray,
    pi_e: np.ndarray,
    action_dist: np.ndarray,
    q_hat: np.ndarray,
    q_logged: np.ndarray,
    *,
    max_weight: float | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Estimate:
    """Doubly robust: DM plus the importance-weighted residual of the logged reward."""
    check_inputs(rewards, pscore, pi_e)
    action_dist = np.asarray(action_dist, dtype=np.float64)
    q_hat = np.asarray(q_hat, dtype=np.float64)
    if action_dist.shape != q_hat.shape or action_dist.shape[0] != len(rewards):
        raise ValueError(f"action_dist {action_dist.shape} and q_hat {q_hat.shape} must be (n={len(rewards)}, A)")
    w = importance_weights(pscore, pi_e, max_weight)
    r = np.asarray(rewards, dtype=np.float64)
    terms = (action_dist * q_hat).sum(axis=1) + w * (r - np.asarray(q_logged, dtype=np.float64))
    return _estimate("dr", terms, n_bootstrap, confidence, seed, groups=groups)


def evaluate(
    data: OPEData,
    estimators: Sequence[str] = ESTIMATORS,
    *,
    max_weight: float | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, Estimate]:
    """Run the named estimators on one dataset (DM/DR need action_dist and q_hat).

    `groups` ((n,) integer cluster ids, e.g. the logged request of each sample) switches
    every estimator's bootstrap to resampling whole clusters; None resamples samples.
    """
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; choose from {list(ESTIMATORS)}")
    kw: dict[str, Any] = dict(n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, groups=groups)
    out: dict[str, Estimate] = {}
    for name in estimators:
        if name in ("dm", "dr") and (data.action_dist is None or data.q_hat is None or data.q_logged is None):
            raise ValueError(f"estimator {name!r} needs action_dist, q_hat and q_logged")
        if name == "ips":
            out[name] = ips(data.rewards, data.pscore, data.pi_e, max_weight=max_weight, **kw)
        elif name == "snips":
            out[name] = snips(data.rewards, data.pscore, data.pi_e, max_weight=max_weight, **kw)
        elif name == "dm":
            out[name] = dm(data.action_dist, data.q_hat, **kw)  # type: ignore[arg-type]
        else:
            out[name] = dr(
                data.rewards,
                data.pscore,
                data.pi_e,
                data.action_dist,
                data.q_hat,
                data.q_logged,  # type: ignore[arg-type]
                max_weight=max_weight,
                **kw,
            )
    return out


def dr_ips_decomposition(data: OPEData, max_weight: float | None = None) -> dict[str, float]:
    """Why DR differs from IPS on this sample: DR - IPS = DM - mean(w * q_logged), split exactly into

        (DM - mean(q_logged))                 the model values the evaluation policy's items differently
      + mean(q_logged) * (1 - mean(w))        the sample's weights do not average to 1
      - cov(w, q_logged)                      the model predicts more where the weights are large

    (population covariance). With a flat reward model only the middle term is left,
    so DR lands above IPS by mean(q) * (1 - mean(w)) whenever mean(w) < 1.
    """
    if data.action_dist is None or data.q_hat is None or data.q_logged is None:
        raise ValueError("the decomposition needs action_dist, q_hat and q_logged")
    w = importance_weights(data.pscore, data.pi_e, max_weight)
    q = np.asarray(data.q_logged, dtype=np.float64)
    dm_value = float(np.mean(np.sum(data.action_dist * data.q_hat, axis=1)))
    w_mean, q_mean = float(w.mean()), float(q.mean())
    cov = float(np.mean((w - w_mean) * (q - q_mean)))
    r = np.asarray(data.rewards, dtype=np.float64)
    return {
        "ips": float(np.mean(w * r)),
        "dm": dm_value,
        "dr": float(np.mean(np.sum(data.action_dist * data.q_hat, axis=1) + w * (r - q))),
        "mean_weight": w_mean,
        "mean_q_logged": q_mean,
        "dr_minus_ips": dm_value - float(np.mean(w * q)),
        "term_dm_vs_logged": dm_value - q_mean,
        "term_weight_mean": q_mean * (1.0 - w_mean),
        "term_cov": -cov,
    }
