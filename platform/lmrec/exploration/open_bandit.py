"""Reward models on the Open Bandit Dataset (OBD): ours and the published (obp quickstart) one.

The exploration search's `obd.reward_model` key picks one (`fit_obd_rewards`); DM and DR use
their cross-fitted predictions. The reader is `lmrec.data.open_bandit`; the Bernoulli-TS
evaluation policy and the OBP paper's check live with the OPE benchmark
(`lmrec.benchmarks.obd_bts`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from lmrec.data.open_bandit import OBDLog
from lmrec.exploration.reward_model import CrossFitRewards, FeatureFn, cross_fit_rewards, log_loss, select_cross_fit

# ------------------------------------------------------------------ reward model features


def _user_onehot(log: OBDLog, rows: np.ndarray) -> np.ndarray:
    offsets = np.concatenate([[0], np.cumsum(log.user_levels)])
    user = np.zeros((len(rows), int(offsets[-1])))
    for f in range(len(log.user_levels)):
        user[np.arange(len(rows)), offsets[f] + log.user_codes[rows, f]] = 1.0
    return user


def obd_features(log: OBDLog, position: int | None = None, use_affinity: bool = False) -> FeatureFn:
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


def obd_predictor(log: OBDLog, position: int | None = None, use_affinity: bool = False) -> Any:
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
    scores: np.ndarray | None  # (n, n_actions) logits at position 0 (for policies to rank on)


L2_GRID = (1.0, 10.0, 100.0, 1000.0)
REWARD_MODELS = ("lmrec", "obp_quickstart")
RewardModelName = Literal["lmrec", "obp_quickstart"]


def fit_obd_rewards(
    log: OBDLog,
    n_folds: int = 3,
    l2: float | Literal["auto"] = "auto",
    seed: int = 12345,
    with_scores: bool = True,
    reward_model: RewardModelName = "lmrec",
) -> OBDRewards:
    """Our logistic regression, cross-fitted over `n_folds` folds (OBP's quickstart uses 3).

    `reward_model="lmrec"` (default): one model over user one-hots, item features, item
    one-hot and position; `l2="auto"` picks its strength from `L2_GRID` by out-of-fold
    log-loss on this log. `reward_model="obp_quickstart"`: the published configuration,
    see `fit_obd_rewards_obp_quickstart` (`l2="auto"` means its fixed 1.0 there).
    """
    if reward_model == "obp_quickstart":
        return fit_obd_rewards_obp_quickstart(log, n_folds, 1.0 if l2 == "auto" else float(l2), seed, with_scores)
    if reward_model != "lmrec":
        raise ValueError(f"reward_model must be one of {REWARD_MODELS}, got {reward_model!r}")
    feats, predict = obd_features(log), obd_predictor(log)
    if l2 == "auto":
        fit = select_cross_fit(feats, log.actions, log.rewards, log.n_actions, L2_GRID, n_folds, seed, predict=predict)
    else:
        fit = cross_fit_rewards(
            feats, log.actions, log.rewards, log.n_actions, n_folds, float(l2), seed, predict=predict
        )
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


# ------------------------------------------------------------------ the published reward model


def kfold_shuffled(n: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each of n rows: a permutation from numpy's legacy `RandomState(seed)`, cut into
    `n_folds` contiguous blocks, the first `n % n_folds` one row longer.

    This is the fold assignment of scikit-learn's `KFold(n_folds, shuffle=True,
    random_state=seed)` (documented behaviour; reproduced here with numpy only), which
    obp's `RegressionModel.fit_predict` uses for cross-fitting.
    """
    perm = np.random.RandomState(seed).permutation(n)
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    folds = np.empty(n, dtype=np.int64)
    folds[perm] = np.repeat(np.arange(n_folds), sizes)
    return folds


def obp_quickstart_features(log: OBDLog) -> tuple[np.ndarray, np.ndarray]:
    """(context (n, c), action_context (n_actions, d)) as obp 0.5's OBD preprocessing builds them.

    Context: one-hot of the four hashed user features with each one's first (sorted)
    level dropped; no user-item affinities. Action context: every categorical item
    feature as its sorted-label integer code (ordinal, not one-hot) plus the numeric
    `item_feature_0`; no item id. No position feature: one model per position.
    """
    offsets = np.concatenate([[0], np.cumsum([lv - 1 for lv in log.user_levels])])
    ctx = np.zeros((log.n, int(offsets[-1])))
    for f in range(len(log.user_levels)):
        c = log.user_codes[:, f]
        hit = c > 0  # level 0 is the dropped baseline
        ctx[np.flatnonzero(hit), offsets[f] + c[hit] - 1] = 1.0
    action_ctx = np.hstack([log.item_codes.astype(np.float64), log.item_numeric])
    return ctx, action_ctx


# fit(X, y) -> (coef (d,), intercept): a logistic-regression solver for the published configuration
LogisticSolver = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, float]]


def fit_obd_rewards_obp_quickstart(
    log: OBDLog,
    n_folds: int = 3,
    l2: float = 1.0,
    seed: int = 12345,
    with_scores: bool = True,
    solver: LogisticSolver | None = None,
) -> OBDRewards:
    """The reward model behind the published DM/DR figures (obp 0.5.4 quickstart), refitted with ours.

    Fixed a priori by that protocol, nothing chosen here: features from
    `obp_quickstart_features` (user context concatenated with the item's action
    context), a separate L2 logistic regression per position (C = 1, i.e. `l2` = 1,
    unpenalised intercept: scikit-learn's `LogisticRegression()` objective, solved
    exactly by our Newton solver), rows in time order, folds from `kfold_shuffled`.
    Predictions for a sample come from its own position's model, fitted on the other
    folds' samples at that position. `solver` replaces our solver (the benchmark's check
    of where another solver's stopping rule moves DM and DR).
    """
    from lmrec.exploration.reward_model import LogisticRegression, sigmoid

    ctx, act = obp_quickstart_features(log)
    order = np.argsort(log.timestamps, kind="stable")  # obp sorts the log by timestamp first
    folds = np.empty(log.n, dtype=np.int64)
    folds[order] = kfold_shuffled(log.n, max(1, n_folds), seed)
    logits = np.empty((log.n, log.n_actions))
    scores = np.empty((log.n, log.n_actions)) if with_scores else None
    for f in range(max(1, n_folds)):
        test = folds == f
        train = ~test if n_folds > 1 else np.ones(log.n, dtype=bool)
        for pos in range(log.len_list):
            tr = np.flatnonzero(train & (log.positions == pos))
            if len(tr) == 0:
                raise ValueError(f"fold {f}: no training samples at position {pos}")
            X = np.hstack([ctx[tr], act[log.actions[tr]]])
            if solver is None:
                model = LogisticRegression(l2=l2, max_iter=200).fit(X, log.rewards[tr])
                coef, intercept = model.coef_, model.intercept_
            else:
                coef, intercept = solver(X, log.rewards[tr])
            w_ctx, w_act = coef[: ctx.shape[1]], coef[ctx.shape[1] :]
            per_item = act @ w_act  # (A,)
            te = np.flatnonzero(test & (log.positions == pos))
            logits[te] = (ctx[te] @ w_ctx + intercept)[:, None] + per_item[None, :]
            if scores is not None and pos == 0:  # position-free policy scores: the first position's model
                te_all = np.flatnonzero(test)
                scores[te_all] = (ctx[te_all] @ w_ctx + intercept)[:, None] + per_item[None, :]
    q = sigmoid(logits)
    rows = np.arange(log.n)
    q_logged = q[rows, log.actions]
    fit = CrossFitRewards(q, logits, q_logged, folds, l2, log_loss(q_logged, log.rewards))
    return OBDRewards(fit, scores)
