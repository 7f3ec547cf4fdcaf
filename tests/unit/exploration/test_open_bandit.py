"""Open Bandit Dataset: our reader, our Bernoulli-TS simulation against obp's, and the IPS check.

The reference action distribution in tests/data was produced once with obp 0.4.1
(see the note inside the file); obp is not needed to run these tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmrec.data.open_bandit import OBDFormatError, load_obd, obd_dir
from lmrec.exploration.estimators import ips
from lmrec.exploration.open_bandit import bts_action_dist, evaluate_bts_from_random

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "obd_bts_action_dist_obp.json"
PUBLISHED_IPW = 0.004553  # REFERENCE_NUMBERS.md 5c (i): obp quickstart, IPW estimate of V(BTS)
PUBLISHED_IPW_REL_ERROR = 0.084019
BTS_ON_POLICY = 0.0042  # REFERENCE_NUMBERS.md 5a: 42 clicks in the 10,000-row BTS sample

pytestmark = pytest.mark.skipif(
    not (obd_dir() / "random" / "all" / "all.csv").exists(), reason="Open Bandit sample not found"
)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.asarray(json.loads(REFERENCE.read_text())["action_dist"])


@pytest.fixture(scope="module")
def random_log():  # type: ignore[no-untyped-def]
    return load_obd(None, "random", "all")


def test_reader(random_log) -> None:  # type: ignore[no-untyped-def]
    log = random_log
    assert log.n == 10_000 and log.n_actions == 80 and log.len_list == 3
    assert set(np.unique(log.positions)) == {0, 1, 2}
    np.testing.assert_allclose(log.pscore, 1 / 80)  # the Random policy
    assert log.affinity.shape == (10_000, 80) and log.item_features.shape[0] == 80
    assert load_obd(None, "bts", "all").on_policy_value == pytest.approx(BTS_ON_POLICY)


def test_reader_names_file_and_column(tmp_path: Path) -> None:
    base = tmp_path / "open_bandit" / "random" / "all"
    base.mkdir(parents=True)
    (base / "item_context.csv").write_text(",item_id,item_feature_0\n0,0,0.1\n1,1,0.2\n")
    (base / "all.csv").write_text(
        ",timestamp,item_id,position,propensity_score,user_feature_0,user_feature_1,"
        "user_feature_2,user_feature_3\n0,2019-11-24 00:00:00+00:00,1,1,0.5,a,b,c,d\n"
    )
    with pytest.raises(OBDFormatError) as err:
        load_obd(tmp_path, "random", "all")
    assert "all.csv" in str(err.value) and "'click'" in str(err.value)


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
    """obp (a dev dependency, a reference only) run live: the same stream for any seed, n_sim and len_list."""
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


def test_our_ips_reproduces_the_published_figure_with_obps_distribution(random_log, reference) -> None:  # type: ignore[no-untyped-def]
    log = random_log
    est = ips(log.rewards, log.pscore, reference[log.actions, log.positions], n_bootstrap=0)
    assert est.value == pytest.approx(PUBLISHED_IPW, abs=5e-7)
    assert est.relative_error(BTS_ON_POLICY) == pytest.approx(PUBLISHED_IPW_REL_ERROR, abs=2e-4)


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


def test_fast_predictor_equals_generic_features(random_log) -> None:  # type: ignore[no-untyped-def]
    from lmrec.exploration.open_bandit import obd_features, obd_predictor
    from lmrec.exploration.reward_model import LogisticRegression, _predict_all

    log = random_log
    rows = np.arange(300)
    model = LogisticRegression(l2=10.0).fit(obd_features(log)(rows, log.actions[rows]), log.rewards[rows])
    for position in (None, 0):
        generic = _predict_all(model, obd_features(log, position), rows, log.n_actions, logits=True)
        np.testing.assert_allclose(obd_predictor(log, position)(model, rows), generic, atol=1e-10)


PUBLISHED_DM, PUBLISHED_DM_REL_ERROR = 0.003545, 0.156041  # REFERENCE_NUMBERS.md 5c (i), obp 0.5.4 quickstart
PUBLISHED_DR, PUBLISHED_DR_REL_ERROR = 0.004727, 0.125548


def test_kfold_shuffled_is_scikit_learns_assignment() -> None:
    from lmrec.exploration.open_bandit import kfold_shuffled

    model_selection = pytest.importorskip("sklearn.model_selection")
    for n, k, seed in [(10_000, 3, 12345), (17, 4, 0)]:
        folds = kfold_shuffled(n, k, seed)
        for f, (_, test) in enumerate(
            model_selection.KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n))
        ):
            assert set(np.flatnonzero(folds == f)) == set(test)


def test_obp_quickstart_features(random_log) -> None:  # type: ignore[no-untyped-def]
    from lmrec.exploration.open_bandit import obp_quickstart_features

    ctx, act = obp_quickstart_features(random_log)
    assert ctx.shape == (10_000, 20)  # obp's quickstart notebook: "context vector with 20 dimensions"
    assert act.shape == (80, 4)  # three label-encoded categorical item features + item_feature_0, no item id
    assert set(np.unique(ctx)) == {0.0, 1.0} and ctx.sum(axis=1).max() <= 4
    assert np.all(act[:, :3] == np.round(act[:, :3])) and act[:, :3].min() == 0


def test_obp_quickstart_reward_model_reproduces_the_published_dm_and_dr(random_log, reference) -> None:  # type: ignore[no-untyped-def]
    """With obp's own pi_e, the published reward-model configuration refitted by our code gives the published figures."""
    from lmrec.exploration.estimators import dr_ips_decomposition, evaluate
    from lmrec.exploration.open_bandit import fit_obd_rewards, ope_data

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


def test_unknown_reward_model_is_rejected(random_log) -> None:  # type: ignore[no-untyped-def]
    from lmrec.exploration.open_bandit import fit_obd_rewards

    with pytest.raises(ValueError, match="reward_model"):
        fit_obd_rewards(random_log, reward_model="lightgbm")  # type: ignore[arg-type]


def test_our_estimators_equal_obps_on_the_same_inputs(random_log) -> None:  # type: ignore[no-untyped-def]
    """Given the same pi_e and reward predictions, obp's IPW, SNIPW, DM and DR give our values (dev reference only)."""
    ope = pytest.importorskip("obp.ope")
    from lmrec.exploration.estimators import evaluate
    from lmrec.exploration.open_bandit import fit_obd_rewards, ope_data

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


def test_solver_sensitivity_moves_only_with_the_stopping_rule() -> None:
    """The published configuration under scikit-learn's lbfgs approaches our Newton optimum as its tolerance shrinks."""
    pytest.importorskip("sklearn")
    from lmrec.exploration.benchmark import solver_sensitivity

    runs = {r["solver"]: r for r in solver_sensitivity(tols=(1e-4, 1e-10))["runs"]}
    newton, loose, tight = (
        runs["lmrec Newton (optimum)"],
        runs["scikit-learn lbfgs, tol 0.0001"],
        runs["scikit-learn lbfgs, tol 1e-10"],
    )
    assert newton["dr_value"] == pytest.approx(PUBLISHED_DR, abs=1e-6) and newton["dm_value"] == pytest.approx(
        PUBLISHED_DM, abs=1e-6
    )
    assert abs(tight["dr_value"] - newton["dr_value"]) < 1e-8 < abs(loose["dr_value"] - newton["dr_value"])


def test_published_pipeline_reruns_refit_the_same_problems_in_another_interpreter(tmp_path) -> None:
    """A child interpreter fitting the written problems gives what scikit-learn gives in-process; failures name their cause."""
    pytest.importorskip("sklearn")
    import sys

    from lmrec.exploration.benchmark import make_python_env, published_pipeline_reruns, solver_sensitivity

    (rerun,) = published_pipeline_reruns([sys.executable])["runs"]
    (_, inproc) = solver_sensitivity(tols=(1e-4,))["runs"]  # same objective, same default tol, same problems
    import sklearn

    assert (
        rerun["versions"]["scikit-learn"] == sklearn.__version__ and len(rerun["n_iter"]) == 9
    )  # 3 folds x 3 positions
    assert (
        max(rerun["n_iter"]) < 1000
    )  # converged under obp's max_iter, so in-process (max_iter 100,000) is the same fit
    for key in ("dm_value", "dr_value", "dr_relative_error"):
        assert rerun[key] == pytest.approx(inproc[key], rel=1e-12), key
    with pytest.raises(RuntimeError, match="/bin/false"):
        published_pipeline_reruns(["/bin/false"])
    with pytest.raises(RuntimeError, match="lmrec-no-such-package"):
        make_python_env("lmrec-no-such-package==0.0.0", tmp_path)
    assert list(tmp_path.iterdir()) == []  # the failed env is removed, not left half-built for reuse
