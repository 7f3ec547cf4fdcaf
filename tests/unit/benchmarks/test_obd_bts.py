"""The OPE benchmark's evaluation policy and the OBP paper's check (`lmrec.benchmarks.obd_bts`).

Our Bernoulli-TS simulation against obp's, the estimators on the Open Bandit sample, and
the published reward model's DM and DR. The reference action distribution in tests/data was
produced once with obp 0.4.1 (see the note inside the file); the tests that run obp itself
(the `[bench]` extra) skip without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmrec.benchmarks.obd_bts import bts_action_dist, evaluate_bts_from_random, ope_data
from lmrec.data.open_bandit import load_obd, obd_dir
from lmrec.exploration.estimators import ips

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "obd_bts_action_dist_obp.json"
BTS_ON_POLICY = 0.0042  # REFERENCE_NUMBERS.md 5a: 42 clicks in the 10,000-row BTS sample
PUBLISHED_IPW_REL_ERROR = 0.084019  # REFERENCE_NUMBERS.md 5c (i): obp quickstart, relative error of its IPW estimate
PUBLISHED_DM, PUBLISHED_DM_REL_ERROR = 0.003545, 0.156041  # REFERENCE_NUMBERS.md 5c (i), obp 0.5.4 quickstart
PUBLISHED_DR, PUBLISHED_DR_REL_ERROR = 0.004727, 0.125548

pytestmark = pytest.mark.skipif(
    not (obd_dir() / "random" / "all" / "all.csv").exists(), reason="Open Bandit sample not found"
)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.asarray(json.loads(REFERENCE.read_text())["action_dist"])


@pytest.fixture(scope="module")
def random_log():  # type: ignore[no-untyped-def]
    return load_obd(None, "random", "all")


def _tolerance(p: np.ndarray, n_sim: int = 100_000) -> np.ndarray:
    # obp's distribution is a Monte Carlo estimate: allow 5 standard errors per entry
    return 5 * np.sqrt(p * (1 - p) / n_sim) + 1e-4


def test_our_bts_simulation_is_obps_evaluation_policy(reference: np.ndarray) -> None:
    """Seed 12345 draws the evaluation policy's own stream: identical to obp's distribution, not merely close."""
    ours = bts_action_dist("all", 3, n_sim=100_000, seed=12345)
    assert ours.shape == reference.shape == (80, 3)
    assert np.array_equal(ours, reference)
    other = bts_action_dist("all", 3, n_sim=100_000, seed=0)  # another stream: only the law agrees
    exact = bts_action_dist("all", 3, method="exact")
    np.testing.assert_allclose(other.sum(axis=0), 1.0)
    assert not np.array_equal(other, reference) and np.all(np.abs(other - exact) <= _tolerance(exact))


def test_bts_simulation_equals_obps_bernoulli_ts_for_other_seeds_and_sizes() -> None:
    """obp (the `[bench]` extra, a reference only) run live: the same stream for any seed, n_sim and len_list."""
    contextfree = pytest.importorskip("obp.policy.contextfree")
    for seed, n_sim, len_list in [(7, 3_000, 3), (12345, 2_500, 2)]:
        policy = contextfree.BernoulliTS(
            n_actions=80, len_list=len_list, is_zozotown_prior=True, campaign="all", random_state=seed
        )
        theirs = policy.compute_batch_action_dist(n_rounds=1, n_sim=n_sim)[0]
        assert np.array_equal(bts_action_dist("all", len_list, n_sim=n_sim, seed=seed), theirs)
    with pytest.raises(ValueError, match="method"):
        bts_action_dist("all", 3, method="quadrature")  # type: ignore[arg-type]


def test_exact_bts_marginals_match_obp(reference: np.ndarray) -> None:
    exact = bts_action_dist("all", 3, method="exact")
    assert np.all(np.abs(exact - reference) <= _tolerance(reference))


def test_ips_is_at_least_as_accurate_as_published(random_log) -> None:  # type: ignore[no-untyped-def]
    """The published protocol (100,000 simulated rankings, random_state 12345) with our simulation."""
    dist = bts_action_dist("all", 3, n_sim=100_000, seed=12345)
    log = random_log
    est = ips(log.rewards, log.pscore, dist[log.actions, log.positions], n_bootstrap=1000, seed=12345)
    assert est.value == 0.00455288  # the published IPW estimate, unrounded (its 0.004553 is this to 6 places)
    assert round(est.relative_error(BTS_ON_POLICY), 6) <= PUBLISHED_IPW_REL_ERROR  # 0.0840190476: the same number
    assert est.ci_low < BTS_ON_POLICY < est.ci_high


def test_all_estimators_on_the_sample(reference: np.ndarray) -> None:
    bench = evaluate_bts_from_random(dist=reference, n_bootstrap=300)
    rows = {r["estimator"]: r for r in bench.rows()}
    assert set(rows) == {"ips", "snips", "dm", "dr"}
    assert bench.truth == pytest.approx(BTS_ON_POLICY)
    for name, row in rows.items():
        assert row["ci_low"] <= row["value"] <= row["ci_high"], name
    for name in ("ips", "snips", "dr"):  # unbiased(ish) estimators: the truth lies inside their intervals
        assert rows[name]["ci_low"] < BTS_ON_POLICY < rows[name]["ci_high"], name
    assert rows["dm"]["std_err"] < 0.1 * rows["ips"]["std_err"]  # DM trades variance for bias
    assert bench.settings["l2"] in (1.0, 10.0, 100.0, 1000.0)


def test_obp_quickstart_reward_model_reproduces_the_published_dm_and_dr(random_log, reference) -> None:  # type: ignore[no-untyped-def]
    """With obp's own pi_e, the published reward-model configuration refitted by our code gives the published figures."""
    from lmrec.exploration.estimators import dr_ips_decomposition, evaluate
    from lmrec.exploration.open_bandit import fit_obd_rewards

    log = random_log
    rewards = fit_obd_rewards(log, 3, "auto", 12345, with_scores=True, reward_model="obp_quickstart")
    assert rewards.fit.l2 == 1.0 and sorted(np.bincount(rewards.fit.folds).tolist()) == [3333, 3333, 3334]
    assert rewards.scores is not None and rewards.scores.shape == (log.n, log.n_actions)
    data = ope_data(log, reference, rewards)
    est = evaluate(data, ("ips", "dm", "dr"), n_bootstrap=200, seed=12345)
    assert est["dm"].value == pytest.approx(PUBLISHED_DM, abs=1e-6)
    assert est["dr"].value == pytest.approx(PUBLISHED_DR, abs=1e-6)
    assert est["dm"].relative_error(BTS_ON_POLICY) == pytest.approx(PUBLISHED_DM_REL_ERROR, abs=1e-4)
    assert est["dr"].relative_error(BTS_ON_POLICY) == pytest.approx(PUBLISHED_DR_REL_ERROR, abs=1e-4)
    d = dr_ips_decomposition(data)
    assert d["dr"] - d["ips"] == pytest.approx(est["dr"].value - est["ips"].value, abs=1e-12)
    assert d["term_dm_vs_logged"] + d["term_weight_mean"] + d["term_cov"] == pytest.approx(d["dr_minus_ips"], abs=1e-12)
    assert d["mean_weight"] < 1 and d["dr_minus_ips"] > 0  # this sample's weights average below 1: DR sits above IPS


def test_our_estimators_equal_obps_on_the_same_inputs(random_log) -> None:  # type: ignore[no-untyped-def]
    """Given the same pi_e and reward predictions, obp's IPW, SNIPW, DM and DR give our values (dev reference only)."""
    ope = pytest.importorskip("obp.ope")
    from lmrec.exploration.estimators import evaluate
    from lmrec.exploration.open_bandit import fit_obd_rewards

    log = random_log
    dist = bts_action_dist("all", 3)
    rewards = fit_obd_rewards(log, 3, "auto", 12345, with_scores=False, reward_model="obp_quickstart")
    ours = evaluate(ope_data(log, dist, rewards), ("ips", "snips", "dm", "dr"), n_bootstrap=0)
    action_dist = np.broadcast_to(dist[None], (log.n, 80, 3))
    q = np.zeros((log.n, 80, 3))  # obp's layout (n, action, position); one model per position fills the logged one
    q[np.arange(log.n), :, log.positions] = rewards.fit.q_hat
    kw = dict(
        reward=log.rewards, action=log.actions, position=log.positions, pscore=log.pscore, action_dist=action_dist
    )
    theirs = {
        "ips": ope.InverseProbabilityWeighting().estimate_policy_value(**kw),
        "snips": ope.SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**kw),
        "dm": ope.DirectMethod().estimate_policy_value(
            position=log.positions, action_dist=action_dist, estimated_rewards_by_reg_model=q
        ),
        "dr": ope.DoublyRobust().estimate_policy_value(**kw, estimated_rewards_by_reg_model=q),
    }
    for name, value in theirs.items():
        assert ours[name].value == pytest.approx(value, rel=1e-12, abs=0), name
