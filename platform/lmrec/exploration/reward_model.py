"""Reward models for the direct method and doubly robust estimators (our own, numpy).

`LogisticRegression` is L2-regularised logistic regression fitted by Newton's
method with a backtracking line search: the same objective as scikit-learn's
`LogisticRegression(C=1/l2)` (penalised sum of log-losses, unpenalised
intercept), small enough to audit and free of extra dependencies.

`cross_fit_rewards` fits it K times, each time predicting the fold it did not
see, so DR's bias correction is not fitted on the rows it corrects (cross-fitting
as in double machine learning; the Open Bandit Pipeline uses 3 folds on OBD).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# features(rows, actions) -> (m, d): features of logged sample `rows[i]` paired with candidate `actions[i]`.
FeatureFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
# predict(model, rows) -> (len(rows), A) logits of every candidate: a fast path when features have structure.
PredictFn = Callable[["LogisticRegression", np.ndarray], np.ndarray]


def _single_thread_blas() -> Any:
    """One BLAS thread: the matrices here are ~200 wide, and on a busy 2-core host a
    threaded solve measured 10-40x slower than a single-threaded one."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, user_api="blas")
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, leave BLAS alone
        return contextlib.nullcontext()


def _log1pexp(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass
class LogisticRegression:
    """Binary logistic regression: minimise sum(logloss) + l2 / 2 * |w|^2 (intercept free)."""

    l2: float = 1.0
    max_iter: int = 100
    tol: float = 1e-8
    coef_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    intercept_: float = 0.0
    n_iter_: int = 0

    def _loss(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
        z = X @ w[1:] + w[0]
        return float(np.sum(_log1pexp(z) - y * z) + 0.5 * self.l2 * np.dot(w[1:], w[1:]))

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogisticRegression:
        with _single_thread_blas():
            return self._fit(X, y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> LogisticRegression:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if X.ndim != 2 or X.shape[0] != len(y):
            raise ValueError(f"X must be (n, d) with n = len(y), got {X.shape} and {len(y)}")
        if np.any((y != 0) & (y != 1)):
            raise ValueError("rewards must be 0 or 1 for logistic regression")
        n, d = X.shape
        Xa = np.hstack([np.ones((n, 1)), X])
        ybar = np.clip(y.mean(), 1e-6, 1 - 1e-6)
        w = np.zeros(d + 1)
        w[0] = np.log(ybar / (1 - ybar))  # start at the base rate: fewer Newton steps
        reg = np.full(d + 1, self.l2)
        reg[0] = 0.0
        loss = self._loss(X, y, w)
        for it in range(1, self.max_iter + 1):
            p = sigmoid(Xa @ w)
            grad = Xa.T @ (p - y) + reg * w
            hess = (Xa * (p * (1 - p))[:, None]).T @ Xa + np.diag(reg + 1e-10)
            step = np.linalg.solve(hess, grad)
            t = 1.0
            while True:  # backtracking keeps every step a descent step
                cand = w - t * step
                new = self._loss(X, y, cand)
                if new <= loss - 1e-4 * t * float(grad @ step) or t < 1e-8:
                    break
                t *= 0.5
            w, improvement, loss = cand, loss - new, new
            self.n_iter_ = it
            if abs(improvement) <= self.tol * max(1.0, abs(loss)):
                break
        self.intercept_, self.coef_ = float(w[0]), w[1:].copy()
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(reward = 1) for each row of X (1-D, not scikit-learn's two columns)."""
        return sigmoid(self.decision_function(X))


def _predict_all(
    model: LogisticRegression, features: FeatureFn, rows: np.ndarray, n_actions: int, logits: bool, chunk: int = 256
) -> np.ndarray:
    out = np.empty((len(rows), n_actions))
    for lo in range(0, len(rows), chunk):
        r = rows[lo : lo + chunk]
        rr = np.repeat(r, n_actions)
        aa = np.tile(np.arange(n_actions), len(r))
        f = model.decision_function(features(rr, aa)) if logits else model.predict_proba(features(rr, aa))
        out[lo : lo + chunk] = f.reshape(len(r), n_actions)
    return out


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy (nats)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


@dataclass
class CrossFitRewards:
    """Out-of-fold reward predictions: q_hat[i, a] for every logged sample i and candidate a."""

    q_hat: np.ndarray  # (n, A) predicted P(click)
    logits: np.ndarray  # (n, A) the same as log-odds (usable as a policy's scores)
    q_logged: np.ndarray  # (n,) prediction for the logged action
    folds: np.ndarray  # (n,) fold of each sample
    l2: float = 1.0
    oof_log_loss: float = float("nan")  # out-of-fold log-loss of q_logged (model selection, no peeking)


def cross_fit_rewards(
    features: FeatureFn,
    actions: np.ndarray,
    rewards: np.ndarray,
    n_actions: int,
    n_folds: int = 3,
    l2: float = 1.0,
    seed: int = 0,
    mask: np.ndarray | None = None,
    predict: PredictFn | None = None,
) -> CrossFitRewards:
    """Fit on K - 1 folds, predict the held-out fold, for each of K folds.

    `mask` (n, A) marks the valid candidates of each sample; others get q = 0.
    `predict` replaces the generic all-candidates prediction (same result, faster).
    With n_folds = 1 the model is fitted and evaluated on all rows (no cross-fitting).
    """
    actions = np.asarray(actions, dtype=np.int64)
    rewards = np.asarray(rewards, dtype=np.float64)
    n = len(actions)
    rng = np.random.default_rng(seed)
    folds = rng.permutation(n) % max(1, n_folds)
    q_logit = np.empty((n, n_actions))
    rows_all = np.arange(n)
    for f in range(max(1, n_folds)):
        test = rows_all[folds == f]
        train = rows_all[folds != f] if n_folds > 1 else rows_all
        model = LogisticRegression(l2=l2).fit(features(train, actions[train]), rewards[train])
        q_logit[test] = predict(model, test) if predict else _predict_all(model, features, test, n_actions, logits=True)
    q = sigmoid(q_logit)
    if mask is not None:
        q = np.where(mask, q, 0.0)
    q_logged = q[rows_all, actions]
    return CrossFitRewards(q, q_logit, q_logged, folds, l2, log_loss(q_logged, rewards))


def select_cross_fit(
    features: FeatureFn,
    actions: np.ndarray,
    rewards: np.ndarray,
    n_actions: int,
    l2_grid: Sequence[float] = (1.0, 10.0, 100.0, 1000.0),
    n_folds: int = 3,
    seed: int = 0,
    mask: np.ndarray | None = None,
    predict: PredictFn | None = None,
) -> CrossFitRewards:
    """The cross-fit whose L2 strength gives the lowest out-of-fold log-loss.

    Selection uses only the logged data, never the policy value being estimated.
    """
    fits = [
        cross_fit_rewards(features, actions, rewards, n_actions, n_folds, l2, seed, mask, predict) for l2 in l2_grid
    ]
    return min(fits, key=lambda f: f.oof_log_loss)
