"""Estimators on hand-computable cases, bootstrap behaviour, unbiasedness, our logistic regression."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.exploration.estimators import OPEData, bootstrap, dm, dr, evaluate, ips, snips
from lmrec.exploration.reward_model import LogisticRegression, cross_fit_rewards, log_loss, select_cross_fit

R = np.array([1.0, 0.0, 1.0, 0.0])
P = np.array([0.5, 0.5, 0.25, 1.0])
PI = np.array([1.0, 0.0, 0.5, 1.0])
# two candidates per sample; the logged one is candidate 0
DIST = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
Q = np.array([[0.8, 0.1], [0.2, 0.6], [0.4, 0.2], [0.1, 0.3]])
Q_LOGGED = Q[:, 0]


def test_hand_computed_values() -> None:
    # w = pi / p = [2, 0, 2, 1]; w * r = [2, 0, 2, 0]
    assert ips(R, P, PI, n_bootstrap=0).value == pytest.approx(1.0)
    assert snips(R, P, PI, n_bootstrap=0).value == pytest.approx(4.0 / 5.0)
    # DM: sum_a pi(a) q(a) per sample = [0.8, 0.6, 0.3, 0.1] -> mean 0.45
    assert dm(DIST, Q, n_bootstrap=0).value == pytest.approx(0.45)
    # DR: DM_i + w_i (r_i - q_i) = [0.8 + 2*0.2, 0.6 + 0, 0.3 + 2*0.6, 0.1 + 1*(-0.1)] = [1.2, 0.6, 1.5, 0.0]
    assert dr(R, P, PI, DIST, Q, Q_LOGGED, n_bootstrap=0).value == pytest.approx(3.3 / 4)
    # clipping the weights at 1.5: w = [1.5, 0, 1.5, 1]
    assert ips(R, P, PI, max_weight=1.5, n_bootstrap=0).value == pytest.approx(3.0 / 4)


def test_evaluate_runs_all_estimators() -> None:
    out = evaluate(OPEData(R, P, PI, DIST, Q, Q_LOGGED), n_bootstrap=0)
    assert {k: round(v.value, 6) for k, v in out.items()} == {"ips": 1.0, "snips": 0.8, "dm": 0.45, "dr": 0.825}
    with pytest.raises(ValueError, match="needs action_dist"):
        evaluate(OPEData(R, P, PI), ["dr"])


def test_bad_inputs_are_rejected_with_counts() -> None:
    with pytest.raises(ValueError, match="2 sample\\(s\\) have a behaviour propensity outside"):
        ips(R, np.array([0.5, 0.0, 1.2, 1.0]), PI)
    with pytest.raises(ValueError, match="equally long"):
        ips(R, P[:3], PI)


def test_bootstrap_interval_and_standard_error() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=4000)
    lo, hi, se = bootstrap(x, n_bootstrap=2000, seed=1)
    analytic = x.std(ddof=1) / np.sqrt(len(x))
    assert lo < x.mean() < hi
    assert se == pytest.approx(analytic, rel=0.1)
    assert hi - lo == pytest.approx(2 * 1.96 * analytic, rel=0.15)
    assert bootstrap(x, 500, seed=3) == bootstrap(x, 500, seed=3)  # seeded
    _, _, se_small = bootstrap(x[:400], n_bootstrap=2000, seed=1)
    assert se_small > 2.5 * se  # ~sqrt(10) wider with a tenth of the data


def test_estimators_are_unbiased_on_a_known_bandit() -> None:
    """Uniform logging over 10 arms, a deterministic target policy: truth is known exactly."""
    rng = np.random.default_rng(0)
    ctr = np.linspace(0.05, 0.5, 10)
    target = np.zeros(10)
    target[7] = 0.7
    target[2] = 0.3
    truth = float(target @ ctr)
    n = 200_000
    a = rng.integers(0, 10, n)
    r = (rng.random(n) < ctr[a]).astype(float)
    p = np.full(n, 0.1)
    pi = target[a]
    dist = np.broadcast_to(target, (n, 10))
    est_ips = ips(r, p, pi, n_bootstrap=200)
    assert abs(est_ips.value - truth) < 4 * est_ips.std_err
    q_perfect = np.broadcast_to(ctr, (n, 10))
    est_dr = dr(r, p, pi, dist, q_perfect, ctr[a], n_bootstrap=200)
    assert abs(est_dr.value - truth) < 4 * est_dr.std_err
    assert est_dr.std_err < 0.9 * est_ips.std_err  # a perfect model removes the variance of w * E[r], not the click noise
    q_biased = q_perfect + 0.1  # DR stays unbiased when the model is wrong, DM does not
    est_dr_b = dr(r, p, pi, dist, q_biased, ctr[a] + 0.1, n_bootstrap=200)
    assert abs(est_dr_b.value - truth) < 4 * est_dr_b.std_err
    assert dm(dist, q_biased, n_bootstrap=0).value == pytest.approx(truth + 0.1)


def test_logistic_regression_matches_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6))
    w = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 1.5])
    y = (rng.random(3000) < 1 / (1 + np.exp(-(X @ w - 1.0)))).astype(float)
    ours = LogisticRegression(l2=1.0).fit(X, y)
    ref = sklearn.LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_[0], atol=1e-4)
    assert ours.intercept_ == pytest.approx(ref.intercept_[0], abs=1e-4)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X)[:, 1], atol=1e-5)


def test_cross_fitting_predicts_unseen_folds_and_selects_by_log_loss() -> None:
    rng = np.random.default_rng(1)
    n, A = 3000, 4
    feats_table = rng.normal(size=(n, A, 3))
    true_w = np.array([1.5, -1.0, 0.5])
    actions = rng.integers(0, A, n)
    logits = feats_table[np.arange(n), actions] @ true_w - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(float)

    def features(rows: np.ndarray, acts: np.ndarray) -> np.ndarray:
        return feats_table[rows, acts]

    fit = cross_fit_rewards(features, actions, y, A, n_folds=3, l2=1.0, seed=0)
    assert fit.q_hat.shape == (n, A) and set(np.unique(fit.folds)) == {0, 1, 2}
    np.testing.assert_allclose(fit.q_logged, fit.q_hat[np.arange(n), actions])
    base = log_loss(np.full(n, y.mean()), y)
    assert fit.oof_log_loss < base - 0.05  # it learned something it could not memorise
    best = select_cross_fit(features, actions, y, A, l2_grid=(1.0, 1e5), n_folds=3, seed=0)
    assert best.l2 == 1.0  # the over-regularised model predicts worse out of fold
