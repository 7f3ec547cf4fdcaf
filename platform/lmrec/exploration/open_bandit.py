"""The Open Bandit Dataset (OBD): our own reader, the Bernoulli-TS evaluation policy,
and the OBP paper's check: estimate BTS's click rate from the Random policy's logs.

Files: `<data_dir>/open_bandit/<behavior>/<campaign>/all.csv` (one row per shown
item: timestamp, item_id, position 1..3, click, propensity_score, hashed user
features, user-item affinities) and `item_context.csv` (item features). We read
them with pandas ourselves; obp's loader does not work with pandas >= 2.

Protocol (Saito et al., arXiv:2008.07146, and obp's `examples/quickstart/obd.ipynb`):
behaviour = Random, evaluation = Bernoulli-TS with ZOZOTOWN's prior (campaign
"all"), whose action distribution comes from 100,000 simulated rankings; the
ground truth is the mean click of BTS's own logs; error = |V_hat - V| / V.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from lmrec.exploration.estimators import ESTIMATORS, Estimate, OPEData, evaluate
from lmrec.exploration.obd_prior import ZOZOTOWN_BTS_PRIOR
from lmrec.exploration.policies import _mc_marginals, beta_topk_marginals_exact
from lmrec.exploration.reward_model import CrossFitRewards, FeatureFn, cross_fit_rewards, select_cross_fit

BEHAVIORS = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
LEN_LIST = 3
REQUIRED_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")
USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")


class OBDFormatError(ValueError):
    """An OBD file is missing a column or holds values out of range (names file and column)."""


@dataclass
class OBDLog:
    """One behaviour policy's logs: one sample per shown item (position 0-based)."""

    behavior: str
    campaign: str
    path: Path
    actions: np.ndarray  # (n,) item ids 0..n_actions-1
    positions: np.ndarray  # (n,) 0..len_list-1
    rewards: np.ndarray  # (n,) clicks 0/1
    pscore: np.ndarray  # (n,) behaviour propensity of (item, position)
    timestamps: np.ndarray  # (n,) datetime64[us] UTC
    user_codes: np.ndarray  # (n, 4) integer codes of the hashed user features
    user_levels: list[int]  # number of distinct values of each user feature
    affinity: np.ndarray  # (n, n_actions) user-item affinity
    item_features: np.ndarray  # (n_actions, d) numeric + one-hot categorical item features
    n_actions: int
    len_list: int = LEN_LIST

    @property
    def n(self) -> int:
        return len(self.actions)

    @property
    def on_policy_value(self) -> float:
        """Mean click over all shown items: the ground truth V(pi) of the logging policy."""
        return float(self.rewards.mean())


def obd_dir(data_dir: Optional[str | Path] = None) -> Path:
    from lmrec.paths import data_dir as resolve

    return resolve(data_dir) / "open_bandit"


def load_obd(data_dir: Optional[str | Path] = None, behavior: str = "random", campaign: str = "all") -> OBDLog:
    """Read one behaviour policy's CSV and the item context (pandas; no obp)."""
    import pandas as pd

    if behavior not in BEHAVIORS:
        raise ValueError(f"behavior must be one of {BEHAVIORS}, got {behavior!r}")
    if campaign not in CAMPAIGNS:
        raise ValueError(f"campaign must be one of {CAMPAIGNS}, got {campaign!r}")
    base = obd_dir(data_dir) / behavior / campaign
    path, item_path = base / "all.csv", base / "item_context.csv"
    for p in (path, item_path):
        if not p.is_file():
            raise FileNotFoundError(f"Open Bandit file not found: {p}")
    df = pd.read_csv(path, index_col=0)
    for col in (*REQUIRED_COLUMNS, *USER_FEATURES):
        if col not in df.columns:
            raise OBDFormatError(f"{path}: column '{col}' is missing")
    items = pd.read_csv(item_path, index_col=0)
    if "item_id" not in items.columns:
        raise OBDFormatError(f"{item_path}: column 'item_id' is missing")
    n_actions = int(items["item_id"].max()) + 1
    actions = df["item_id"].to_numpy(np.int64)
    positions = df["position"].to_numpy(np.int64) - 1  # files are 1-based
    rewards = df["click"].to_numpy(np.float64)
    pscore = df["propensity_score"].to_numpy(np.float64)
    _check_range(path, "item_id", (actions < 0) | (actions >= n_actions))
    _check_range(path, "position", (positions < 0) | (positions >= LEN_LIST))
    _check_range(path, "click", (rewards != 0) & (rewards != 1))
    _check_range(path, "propensity_score", ~((pscore > 0) & (pscore <= 1)))
    codes, levels = [], []
    for col in USER_FEATURES:
        c, uniq = pd.factorize(df[col].astype(str), sort=True)
        codes.append(c)
        levels.append(len(uniq))
    aff_cols = [f"user-item_affinity_{a}" for a in range(n_actions)]
    affinity = df[aff_cols].to_numpy(np.float64) if all(c in df.columns for c in aff_cols) else np.zeros((len(df), n_actions))
    items = items.sort_values("item_id")
    feats = [items[[c for c in items.columns if c != "item_id" and items[c].dtype.kind in "fi"]].to_numpy(np.float64)]
    for col in items.columns:
        if col != "item_id" and items[col].dtype.kind not in "fi":
            feats.append(pd.get_dummies(items[col].astype(str)).to_numpy(np.float64))
    ts = pd.to_datetime(df["timestamp"], utc=True).to_numpy(dtype="datetime64[us]")
    return OBDLog(
        behavior, campaign, path, actions, positions, rewards, pscore, ts, np.stack(codes, axis=1), levels,
        affinity, np.hstack(feats), n_actions,
    )


def _check_range(path: Path, column: str, bad: np.ndarray) -> None:
    if bad.any():
        raise OBDFormatError(f"{path}: column '{column}': {int(bad.sum())} row(s) out of range (first at row {int(np.argmax(bad))})")


# ------------------------------------------------------------------ evaluation policy


def bts_prior(campaign: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """ZOZOTOWN's Beta prior (alpha, beta) per item for `campaign`."""
    p = ZOZOTOWN_BTS_PRIOR[campaign]
    return np.asarray(p["alpha"], dtype=np.float64), np.asarray(p["beta"], dtype=np.float64)


def bts_action_dist(
    campaign: str = "all", len_list: int = LEN_LIST, n_sim: int = 100_000, seed: int = 12345,
    method: Literal["mc", "exact"] = "mc",
) -> np.ndarray:
    """(n_actions, len_list) P(item a at position k) under Bernoulli-TS from the prior.

    "mc": rank one Beta draw per item, n_sim times (the published protocol, with
    its simulation noise); "exact": numerical integration, no noise.
    """
    alpha, beta = bts_prior(campaign)
    if method == "exact":
        return beta_topk_marginals_exact(alpha, beta, len_list)
    rng = np.random.default_rng(seed)

    def draw(zz: np.ndarray, nn: np.ndarray, cc: np.ndarray, g: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
        return g.beta(alpha, beta, size=size)

    n = len(alpha)
    zeros = np.zeros((1, n))
    dist = _mc_marginals(draw, zeros, zeros, zeros, np.ones((1, n), dtype=bool), len_list, n_sim, rng)[0]
    return dist.T


# ------------------------------------------------------------------ reward model features


def _user_onehot(log: OBDLog, rows: np.ndarray) -> np.ndarray:
    offsets = np.concatenate([[0], np.cumsum(log.user_levels)])
    user = np.zeros((len(rows), int(offsets[-1])))
    for f in range(len(log.user_levels)):
        user[np.arange(len(rows)), offsets[f] + log.user_codes[rows, f]] = 1.0
    return user


def obd_features(log: OBDLog, position: Optional[int] = None, use_affinity: bool = False) -> FeatureFn:
    """features(rows, actions): user one-hot, item features, item one-hot, position one-hot.

    `position` fixes the position (for position-free policy scores); None uses
    each sample's logged position. Affinities are mostly zero in the sample and
    make every context unique, so they are off by default.
    """

    def fn(rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        m = len(rows)
        item_onehot = np.zeros((m, log.n_actions))
        item_onehot[np.arange(m), actions] = 1.0
        pos = np.zeros((m, log.len_list))
        pos[np.arange(m), log.positions[rows] if position is None else position] = 1.0
        parts = [_user_onehot(log, rows), log.item_features[actions], item_onehot, pos]
        if use_affinity:
            parts.append(log.affinity[rows, actions][:, None])
        return np.hstack(parts)

    return fn


def obd_predictor(log: OBDLog, position: Optional[int] = None, use_affinity: bool = False) -> Any:
    """Logits of every item for `rows`, from the blocks of `obd_features` (no n x A feature matrix)."""
    n_user = int(sum(log.user_levels))
    d_item = log.item_features.shape[1]

    def predict(model: Any, rows: np.ndarray) -> np.ndarray:
        w = model.coef_
        w_user, w_if = w[:n_user], w[n_user : n_user + d_item]
        w_item = w[n_user + d_item : n_user + d_item + log.n_actions]
        w_pos = w[n_user + d_item + log.n_actions : n_user + d_item + log.n_actions + log.len_list]
        per_item = log.item_features @ w_if + w_item  # (A,)
        pos = log.positions[rows] if position is None else np.full(len(rows), position)
        per_row = _user_onehot(log, rows) @ w_user + w_pos[pos] + model.intercept_  # (m,)
        out = per_row[:, None] + per_item[None, :]
        if use_affinity:
            out = out + w[-1] * log.affinity[rows]
        return out

    return predict


@dataclass
class OBDRewards:
    """Cross-fitted reward predictions on one log, plus position-free policy scores."""

    fit: CrossFitRewards  # at each sample's logged position (for DM/DR)
    scores: Optional[np.ndarray]  # (n, n_actions) logits at position 0 (for policies to rank on)


L2_GRID = (1.0, 10.0, 100.0, 1000.0)


def fit_obd_rewards(
    log: OBDLog, n_folds: int = 3, l2: float | Literal["auto"] = "auto", seed: int = 12345, with_scores: bool = True,
) -> OBDRewards:
    """Our logistic regression, cross-fitted over `n_folds` folds (OBP's quickstart uses 3).

    `l2="auto"` picks the strength from `L2_GRID` by out-of-fold log-loss on this log.
    """
    feats, predict = obd_features(log), obd_predictor(log)
    if l2 == "auto":
        fit = select_cross_fit(feats, log.actions, log.rewards, log.n_actions, L2_GRID, n_folds, seed, predict=predict)
    else:
        fit = cross_fit_rewards(feats, log.actions, log.rewards, log.n_actions, n_folds, float(l2), seed, predict=predict)
    # Scores at position 0 from the same folds: the position term only shifts every item equally.
    scores = _position_free_scores(log, fit, n_folds, fit.l2) if with_scores else None
    return OBDRewards(fit, scores)


def _position_free_scores(log: OBDLog, fit: CrossFitRewards, n_folds: int, l2: float) -> np.ndarray:
    from lmrec.exploration.reward_model import LogisticRegression

    scores = np.empty((log.n, log.n_actions))
    rows = np.arange(log.n)
    feats, predict0 = obd_features(log), obd_predictor(log, position=0)
    for f in range(max(1, n_folds)):
        test = rows[fit.folds == f]
        train = rows[fit.folds != f] if n_folds > 1 else rows
        model = LogisticRegression(l2=l2).fit(feats(train, log.actions[train]), log.rewards[train])
        scores[test] = predict0(model, test)
    return scores


def ope_data(log: OBDLog, dist: np.ndarray, rewards: Optional[OBDRewards] = None) -> OPEData:
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
            {**e.to_dict(), "relative_error": e.relative_error(self.truth), "relative_to_behavior": e.value / self.behavior_value}
            for e in self.estimates.values()
        ]


def evaluate_bts_from_random(
    data_dir: Optional[str | Path] = None, campaign: str = "all", n_sim: int = 100_000, seed: int = 12345,
    method: Literal["mc", "exact"] = "mc", n_folds: int = 3, l2: float | Literal["auto"] = "auto", n_bootstrap: int = 10_000,
    estimators: tuple[str, ...] = ESTIMATORS, dist: Optional[np.ndarray] = None,
) -> OBDBenchmark:
    """The OBP paper's check on the sample: V(BTS) estimated from Random logs vs BTS's CTR."""
    random_log = load_obd(data_dir, "random", campaign)
    bts_log = load_obd(data_dir, "bts", campaign)
    if dist is None:
        dist = bts_action_dist(campaign, random_log.len_list, n_sim, seed, method)
    need_model = any(e in ("dm", "dr") for e in estimators)
    rewards = fit_obd_rewards(random_log, n_folds, l2, seed, with_scores=False) if need_model else None
    data = ope_data(random_log, dist, rewards)
    est = evaluate(data, estimators, n_bootstrap=n_bootstrap, seed=seed)
    settings = dict(campaign=campaign, n_sim=n_sim, seed=seed, method=method, n_folds=n_folds,
                    l2=rewards.fit.l2 if rewards else None, reward_model_oof_log_loss=rewards.fit.oof_log_loss if rewards else None,
                    n_bootstrap=n_bootstrap, n_random=random_log.n, n_bts=bts_log.n)
    return OBDBenchmark(bts_log.on_policy_value, random_log.on_policy_value, est, dist, settings)
