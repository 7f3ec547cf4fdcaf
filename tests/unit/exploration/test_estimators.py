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
    assert (
        est_dr.std_err < 0.9 * est_ips.std_err
    )  # a perfect model removes the variance of w * E[r], not the click noise
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


def _fixed_ope_data() -> tuple[OPEData, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(123)
    n = 300
    r = (rng.random(n) < 0.3).astype(float)
    p = rng.uniform(0.1, 1.0, n)
    pi = rng.uniform(0.0, 1.0, n)
    q = rng.uniform(0, 1, (n, 2))
    return OPEData(r, p, pi, np.stack([pi, 1 - pi], axis=1), q, q[:, 0]), r, pi / p


def test_per_sample_bootstrap_is_unchanged_without_groups() -> None:
    """groups=None must reproduce the numbers the Open Bandit protocol was run with.

    The expected values were computed with estimators.py as it was before the `groups`
    argument was added (same data, same seeds) and hard-coded here.
    """
    data, r, w = _fixed_ope_data()
    expected = {
        "ips": (0.37785579233272154, 0.29329873338794704, 0.474517627652776, 0.04812662763386978),
        "snips": (0.3474912086204473, 0.2767052113631774, 0.41763619155344056, 0.039943379877968435),
        "dm": (0.5031306876255418, 0.4758624376987825, 0.5292884529136487, 0.01382901303684718),
        "dr": (0.31367564822582655, 0.22049512397956295, 0.4121640854533813, 0.05022585916193334),
    }
    for groups_kw in ({}, {"groups": None}):
        out = evaluate(data, n_bootstrap=250, seed=7, **groups_kw)  # type: ignore[arg-type]
        for name, want in expected.items():
            e = out[name]
            assert (e.value, e.ci_low, e.ci_high, e.std_err) == pytest.approx(want, rel=1e-12, abs=0), name
    assert bootstrap(r * 2.0, 300, 0.9, seed=11) == pytest.approx(
        (0.5996666666666667, 0.7733333333333333, 0.05407201202864531), rel=1e-12
    )
    assert bootstrap(r * w, 300, 0.9, seed=11, denominator=w) == pytest.approx(
        (0.2847353838768577, 0.4034697868453966, 0.038589618464495996), rel=1e-12
    )


def test_cluster_bootstrap_widens_the_interval_for_correlated_samples() -> None:
    rng = np.random.default_rng(5)
    n_groups, size = 400, 5
    per_group = (rng.random(n_groups) < 0.4).astype(float)
    x = np.repeat(per_group, size)  # every sample of a group is identical: one effective draw per group
    groups = np.repeat(rng.permutation(n_groups) * 1000 + 17, size)  # arbitrary, non-contiguous ids
    _, _, se_flat = bootstrap(x, n_bootstrap=2000, seed=2)
    lo, hi, se_grouped = bootstrap(x, n_bootstrap=2000, seed=2, groups=groups)
    assert lo < x.mean() < hi
    assert se_grouped / se_flat > 1.5
    assert se_grouped / se_flat == pytest.approx(np.sqrt(size), rel=0.15)
    # passed through the estimators: IPS with unit weights is the mean reward
    ones = np.ones_like(x)
    e_flat = ips(x, ones, ones, n_bootstrap=2000, seed=2)
    e_grp = evaluate(OPEData(x, ones, ones), ["ips", "snips"], n_bootstrap=2000, seed=2, groups=groups)
    assert e_grp["ips"].value == e_flat.value and e_grp["ips"].std_err == pytest.approx(se_grouped)
    assert e_grp["snips"].std_err / snips(x, ones, ones, n_bootstrap=2000, seed=2).std_err > 1.5
    with pytest.raises(ValueError, match="groups must have shape"):
        bootstrap(x, 10, groups=groups[:-1])
    with pytest.raises(ValueError, match="integer cluster ids"):
        bootstrap(x, 10, groups=groups.astype(float))


def test_snips_interval_is_finite_when_most_weights_are_zero() -> None:
    """Replicates whose weights are all 0 have no SNIPS ratio; they are dropped, not NaN."""
    n = 30
    r = np.zeros(n)
    r[:2] = [1.0, 0.0]
    pi = np.zeros(n)
    pi[:2] = [1.0, 0.5]  # two samples of 30 have a non-zero weight: ~13% of resamples miss both
    p = np.full(n, 0.5)
    with np.errstate(all="raise"):  # no 0/0 either
        est = snips(r, p, pi, n_bootstrap=500, seed=0)
        grouped = snips(
            r, p, pi, n_bootstrap=500, seed=0, groups=np.arange(n) % 15
        )  # pairs; samples 0 and 1 in different groups
    for e in (est, grouped):
        assert e.value == pytest.approx(2.0 / 3.0)
        assert np.isfinite([e.ci_low, e.ci_high, e.std_err]).all()
        assert 0.0 <= e.ci_low <= e.value <= e.ci_high <= 1.0 and e.ci_low < e.ci_high and e.std_err > 0
    assert bootstrap(np.zeros(3), 5, denominator=np.zeros(3)) == pytest.approx((np.nan,) * 3, nan_ok=True)
