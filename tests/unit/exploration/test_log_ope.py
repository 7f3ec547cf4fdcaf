"""Off-policy evaluation on our own feedback logs, and the search objectives (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmrec.config import ConfigError
from lmrec.exploration.log_ope import LoggedSlates, evaluate_policy_on_logs, fit_log_rewards, policy_marginals
from lmrec.exploration.logs import FeedbackLogError, FeedbackLogWriter, read_logs, records_to_table
from lmrec.exploration.objectives import LoggedScenario, evaluate, policy_config
from lmrec.exploration.policies import build_policy
from lmrec.exploration.simulate import SyntheticBandit


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    env = SyntheticBandit(num_items=60, num_candidates=10, slate_size=3, base_ctr=0.1, seed=4)
    logging_policy = build_policy({"type": "epsilon_greedy", "epsilon": 0.5, "slate_size": 3})
    root = tmp_path_factory.mktemp("logs")
    env.simulate(logging_policy, 6000, FeedbackLogWriter(root, batch_size=2500), seed=0)
    logged = LoggedSlates.from_table(read_logs(root))
    cands, scores = env.requests(6000, 0)
    return env, logging_policy, logged, cands, scores


def test_flattening(world) -> None:  # type: ignore[no-untyped-def]
    env, _, logged, cands, _ = world
    assert logged.n == 6000 * 3 and logged.candidates.shape == (6000, 10)
    assert np.all(logged.action >= 0) and np.all(logged.mask)
    np.testing.assert_array_equal(np.bincount(logged.rank), [6000, 6000, 6000])
    # the logged propensity of each sample is the logging policy's marginal at that position
    dist = policy_marginals(logged, world[1])
    np.testing.assert_allclose(dist[logged.row, logged.rank, logged.action], logged.pscore, rtol=1e-6)


def test_logging_policy_evaluates_to_its_own_click_rate(world) -> None:  # type: ignore[no-untyped-def]
    _, logging_policy, logged, _, _ = world
    est = evaluate_policy_on_logs(logged, logging_policy, ["ips"], n_bootstrap=0)["ips"]
    assert est.value == pytest.approx(logged.reward.mean(), rel=1e-9)  # weights are exactly 1


@pytest.mark.parametrize(
    "target",
    [
        {"type": "greedy"},
        {"type": "softmax", "temperature": 0.5, "n_sim": 600},
        {"type": "thompson", "prior_strength": 3.0, "n_sim": 600},
    ],
)
def test_estimates_cover_the_true_value(world, target) -> None:  # type: ignore[no-untyped-def]
    env, _, logged, cands, scores = world
    pol = build_policy({**target, "slate_size": 3})
    truth = env.true_value(pol, cands, scores)
    rewards = fit_log_rewards(logged, seed=0)
    est = evaluate_policy_on_logs(logged, pol, rewards=rewards, n_bootstrap=400)
    for name in ("ips", "snips", "dr"):
        assert abs(est[name].value - truth) < 4 * est[name].std_err, (name, est[name], truth)
    assert est["dr"].std_err <= est["ips"].std_err * 1.05


def test_slates_of_different_lengths(tmp_path: Path) -> None:
    env = SyntheticBandit(num_items=30, num_candidates=6, slate_size=3, seed=2)
    pol = build_policy({"type": "epsilon_greedy", "epsilon": 0.4, "slate_size": 3})
    rows = [r.to_row() for r in env.simulate(pol, 10)]
    for r in rows[:4]:  # the first four requests showed only two items
        for col in ("slate", "positions", "propensities", "rewards"):
            r[col] = r[col][:2]
    logged = LoggedSlates.from_table(records_to_table(rows))
    assert logged.n == 4 * 2 + 6 * 3 and list(logged.slate_len) == [2] * 4 + [3] * 6
    dist = policy_marginals(logged, pol)
    assert np.all(dist[:4, 2, :] == 0) and np.allclose(dist[4:].sum(axis=2), 1.0)
    np.testing.assert_allclose(dist[logged.row, logged.rank, logged.action], logged.pscore, rtol=1e-6)


def test_unjoined_rewards_are_an_error(tmp_path: Path) -> None:
    env = SyntheticBandit(num_items=30, num_candidates=5, slate_size=2)
    recs = env.simulate(build_policy({"type": "softmax", "slate_size": 2}), 20)
    rows = [r.to_row() for r in recs]
    rows[3]["rewards"] = None
    table = records_to_table(rows)
    with pytest.raises(FeedbackLogError, match="1 of 20 row\\(s\\) have no rewards"):
        LoggedSlates.from_table(table, "x")
    assert LoggedSlates.from_table(table, "x", drop_unrewarded=True).n == 19 * 2


def test_objective_is_estimate_minus_penalty(world) -> None:  # type: ignore[no-untyped-def]
    _, _, logged, _, _ = world
    scenario = LoggedScenario(
        logged,
        fit_log_rewards(logged, seed=0),
        slate_size=3,
        estimator="dr",
        n_bootstrap=200,
        base_policy={"slate_size": 3, "n_sim": 200},
    )
    cfg = policy_config({"policy": "epsilon_greedy", "epsilon": 0.2}, scenario.base_policy)
    assert cfg.type == "epsilon_greedy" and cfg.epsilon == 0.2 and cfg.n_sim == 200
    m0 = evaluate(scenario, cfg, penalty=0.0)
    m2 = evaluate(scenario, cfg, penalty=2.0)
    assert m0["objective"] == pytest.approx(m0["estimate"])
    assert m2["objective"] == pytest.approx(m2["estimate"] - 2.0 * m2["std_err"])
    reports: list[dict[str, float]] = []
    evaluate(scenario, cfg, 1.0, report=reports.append)
    assert len(reports) == 1 and "objective" in reports[0]
    with pytest.raises(ConfigError):
        policy_config({"policy": "epsilon_greedy", "epsilon": 3.0}, scenario.base_policy)


def test_state_from_logs_equals_online_updates() -> None:
    from lmrec.exploration.log_ope import state_from_logs

    env = SyntheticBandit(num_items=40, num_candidates=8, slate_size=3, seed=5)
    online = build_policy({"type": "thompson", "feedback": "lift", "prior_strength": 4.0, "slate_size": 3})
    recs = env.simulate(online, 300, learn=True)  # updates its state as it serves
    rebuilt = state_from_logs(records_to_table([r.to_row() for r in recs]), online)
    assert rebuilt.ids.tolist() == online.state.ids.tolist()
    assert rebuilt.impressions.tolist() == online.state.impressions.tolist()
    assert rebuilt.clicks.tolist() == online.state.clicks.tolist()
    # expected clicks agree up to the float32 rounding of logged scores (micro-click units)
    assert np.abs(rebuilt.expected - online.state.expected).max() <= 300


def test_split_takes_the_earliest_requests_and_their_samples(world) -> None:  # type: ignore[no-untyped-def]
    _, _, logged, _, _ = world
    warm, rest, samples = logged.split(0.25)
    assert len(warm.slate_len) == 1500 and len(rest.slate_len) == 4500
    assert warm.n + rest.n == logged.n and rest.n == len(samples)
    np.testing.assert_array_equal(rest.candidates, logged.candidates[1500:])
    np.testing.assert_array_equal(rest.reward, logged.reward[samples])
    np.testing.assert_array_equal(rest.action, logged.action[samples])
    np.testing.assert_array_equal(
        rest.candidates[rest.row, rest.action], logged.candidates[logged.row[samples], logged.action[samples]]
    )
    assert warm.row.max() == 1499 and rest.row.min() == 0
    with pytest.raises(ValueError):
        logged.split(1.0)


def test_warm_start_gives_ucb_its_statistics_and_is_estimated_honestly(world) -> None:  # type: ignore[no-untyped-def]
    """Without statistics UCB ranks as greedy does; warmed up on the first half of the logs it
    ranks differently, and DR on the second half covers its true value there."""
    from lmrec.tuning.exploration.scenarios import with_warm_start

    env, _, logged, cands, scores = world
    base = LoggedScenario(
        logged,
        fit_log_rewards(logged, seed=0),
        slate_size=3,
        estimator="dr",
        n_bootstrap=300,
        base_policy={"slate_size": 3, "n_sim": 200},
        cluster_by_request=True,
    )
    ucb = policy_config({"policy": "ucb", "ucb_c": 0.3, "prior_strength": 2.0, "feedback": "counts"}, base.base_policy)
    greedy = policy_config({"policy": "greedy"}, base.base_policy)
    assert not base.stateful
    assert evaluate(base, ucb, 0.0)["estimate"] == evaluate(base, greedy, 0.0)["estimate"]

    warmed = with_warm_start(base, 0.5)
    assert warmed.stateful and warmed.info["warm_start_requests"] == 3000 and warmed.logged.n == 3000 * 3
    from lmrec.exploration.objectives import logged_policy

    pol = logged_policy(warmed, ucb)
    assert pol.state.total > 0 and int(pol.state.impressions.sum()) == 3000 * 3  # every shown item of the warm half
    est = evaluate(warmed, ucb, 0.0)
    assert est["estimate"] != evaluate(warmed, greedy, 0.0)["estimate"]
    truth = env.true_value(pol, cands[3000:], scores[3000:])  # the same policy, statistics fixed, on the scored half
    assert abs(est["estimate"] - truth) < 4 * est["std_err"], (est, truth)
