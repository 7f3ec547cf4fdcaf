"""Policies: propensities, special cases, exploration behaviour, state, JSON, seeding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmrec.config import ConfigError
from lmrec.exploration.policies import (
    POLICY_TYPES,
    PolicyConfig,
    PolicyState,
    ThompsonPolicy,
    beta_topk_marginals_exact,
    build_policy,
    feedback_state,
    merge_states,
    policy_from_json,
)

CONFIGS = {
    "greedy": {"type": "greedy"},
    "epsilon_greedy": {"type": "epsilon_greedy", "epsilon": 0.3},
    "softmax": {"type": "softmax", "temperature": 0.7},
    "ucb": {"type": "ucb", "ucb_c": 0.5, "prior_strength": 5.0},
    "ucb_lift": {"type": "ucb", "ucb_c": 0.5, "prior_strength": 5.0, "feedback": "lift"},
    "thompson": {"type": "thompson", "prior_strength": 5.0},
    "thompson_lift": {"type": "thompson", "prior_strength": 5.0, "feedback": "lift"},
}


def _with_feedback(pol, items: np.ndarray, rewards: list[int]) -> None:  # type: ignore[no-untyped-def]
    pol.update(items, rewards, scores=np.linspace(1.0, -1.0, len(items)))


def _scores(b: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, n)), rng.permutation(1000)[: b * n].reshape(b, n)


@pytest.mark.parametrize("label", CONFIGS)
def test_marginals_are_distributions(label: str) -> None:
    scores, cands = _scores(6, 12)
    pol = build_policy({"slate_size": 4, "n_sim": 2000, **CONFIGS[label]})
    _with_feedback(pol, cands[0, :5], [1, 0, 0, 1, 0])  # some items seen, others not
    dist = pol.action_dist(scores, candidates=cands)
    assert dist.shape == (6, 4, 12)
    assert np.all(dist >= 0)
    np.testing.assert_allclose(dist.sum(axis=2), 1.0, atol=1e-9)  # each position shows exactly one item
    assert np.all(dist.sum(axis=1) <= 1.0 + 1e-9)  # an item appears at most once per slate
    np.testing.assert_allclose(dist.sum(axis=(1, 2)), 4.0, atol=1e-9)


def test_padding_is_never_shown() -> None:
    scores, cands = _scores(3, 8)
    mask = np.ones_like(scores, dtype=bool)
    mask[:, 5:] = False
    scores[:, 5:] = 100.0  # would win if padding were not masked
    for ptype in POLICY_TYPES:
        dist = build_policy({"type": ptype, "slate_size": 3, "n_sim": 500}).action_dist(
            scores, candidates=cands, mask=mask
        )
        assert dist[:, :, 5:].sum() == 0.0, ptype


@pytest.mark.parametrize("label", CONFIGS)
def test_choose_propensities_match_marginals(label: str) -> None:
    scores, cands = _scores(1, 10, seed=3)
    pol = build_policy({"slate_size": 3, "n_sim": 200_000, **CONFIGS[label]})
    _with_feedback(pol, cands[0, :4], [1, 1, 0, 0])
    dist = pol.action_dist(scores[0], candidates=cands[0])
    for key in range(5):
        slate = pol.choose(cands[0], scores[0], key=key)
        assert len(set(slate.items.tolist())) == 3
        assert np.all((slate.propensities > 0) & (slate.propensities <= 1))
        expected = dist[np.arange(3), slate.indices]
        # exact policies agree exactly; sampled ones agree up to the Monte Carlo error of `dist`
        np.testing.assert_allclose(slate.propensities, expected, atol=5e-3)


def test_greedy_is_epsilon_greedy_with_epsilon_zero() -> None:
    scores, cands = _scores(50, 15, seed=1)
    greedy = build_policy({"type": "greedy", "slate_size": 5})
    eps0 = build_policy({"type": "epsilon_greedy", "epsilon": 0.0, "slate_size": 5})
    np.testing.assert_array_equal(greedy.action_dist(scores), eps0.action_dist(scores))
    for i in range(50):
        a, b = greedy.choose(cands[i], scores[i], key=i), eps0.choose(cands[i], scores[i], key=i)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_array_equal(a.propensities, b.propensities)
    top = np.argsort(-scores[0])[:5]
    np.testing.assert_array_equal(greedy.choose(cands[0], scores[0]).items, cands[0][top])


def test_epsilon_greedy_explores_at_rate_epsilon() -> None:
    scores = np.arange(20, dtype=float)[::-1]
    pol = build_policy({"type": "epsilon_greedy", "epsilon": 0.2, "slate_size": 2, "seed": 7})
    greedy_slate = [0, 1]
    n = 4000
    non_greedy = sum(pol.choose(np.arange(20), scores).items.tolist() != greedy_slate for _ in range(n))
    # P(a random slate differs from the greedy one) = eps * (1 - 1/(20*19))
    expected = 0.2 * (1 - 1 / 380)
    assert abs(non_greedy / n - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_ucb_explores_items_it_has_never_seen() -> None:
    cands = np.arange(10)
    scores = np.linspace(2.0, -2.0, 10)  # item 9 has the lowest model score
    state = feedback_state(np.repeat(np.arange(9), 50), np.zeros(450))  # items 0..8 shown 50 times each
    pol = build_policy({"type": "ucb", "ucb_c": 0.5, "slate_size": 3}, state)
    slate = pol.choose(cands, scores)
    assert slate.items[0] == 9  # the never-seen item goes first
    pol_c0 = build_policy({"type": "ucb", "ucb_c": 0.0, "slate_size": 3}, state)
    assert 9 not in pol_c0.choose(cands, scores).items  # without a bonus it exploits
    # once item 9 has been shown and never clicked, it loses its place
    pol.update(np.repeat([9], 200), np.zeros(200))
    assert 9 not in pol.choose(cands, scores).items


def test_ucb_learns_from_clicks() -> None:
    cands, scores = np.arange(5), np.zeros(5)
    pol = build_policy(
        {"type": "ucb", "ucb_c": 0.05, "prior_strength": 1.0, "slate_size": 1, "prior": "identity", "score_shift": 0.1}
    )
    rng = np.random.default_rng(0)
    ctr = np.array([0.05, 0.1, 0.5, 0.1, 0.05])
    for _ in range(600):
        s = pol.choose(cands, scores)
        pol.update(s.items, rng.random(1) < ctr[s.items])
    n, _ = pol.state.lookup(cands)
    assert n.argmax() == 2 and n[2] > 0.6 * n.sum()


def test_thompson_posterior_concentrates() -> None:
    pol = build_policy({"type": "thompson", "prior_strength": 2.0, "slate_size": 1, "n_sim": 20_000})
    assert isinstance(pol, ThompsonPolicy)
    rng = np.random.default_rng(0)
    stds, means = [], []
    for n in (10, 100, 1000, 10_000):
        state = feedback_state(np.zeros(n, dtype=int), rng.random(n) < 0.3)
        a, b = pol.posterior(np.zeros(1), *state.lookup(np.array([0])))
        stds.append(float(np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))[0]))
        means.append(float((a / (a + b))[0]))
    assert all(s1 > s2 for s1, s2 in zip(stds, stds[1:]))  # strictly narrower with more data
    assert abs(means[-1] - 0.3) < 0.02
    # with two items (true CTR 0.6 vs 0.4), P(show the better one) rises towards 1
    cands, scores = np.array([0, 1]), np.zeros(2)
    p_best = []
    for n in (5, 50, 2000):
        state = feedback_state(
            np.repeat([0, 1], n), np.concatenate([np.full(n, 1.0) * (np.arange(n) < 0.6 * n), np.arange(n) < 0.4 * n])
        )
        p_best.append(build_policy(pol.config, state).action_dist(scores, candidates=cands)[0, 0])
    assert p_best[0] < p_best[1] < p_best[2] and p_best[2] > 0.99


def test_thompson_exact_marginals_match_simulation() -> None:
    alpha = np.array([2.0, 5.0, 1.0, 8.0, 3.0])
    beta = np.array([8.0, 5.0, 1.0, 2.0, 30.0])
    exact = beta_topk_marginals_exact(alpha, beta, 3)
    rng = np.random.default_rng(0)
    draws = rng.beta(alpha, beta, size=(200_000, 5))
    order = np.argsort(-draws, axis=1)[:, :3]
    mc = np.stack([np.bincount(order[:, k], minlength=5) / 200_000 for k in range(3)], axis=1)
    np.testing.assert_allclose(exact, mc, atol=4e-3)
    np.testing.assert_allclose(exact.sum(axis=0), 1.0, atol=1e-9)


def test_state_merge_is_associative_and_equals_all_feedback() -> None:
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 30, 200), (rng.random(200) < 0.2).astype(float), rng.random(200)) for _ in range(3)]
    a, b, c = (feedback_state(i, r, e) for i, r, e in batches)
    left, right = merge_states(merge_states(a, b), c), merge_states(a, merge_states(b, c))
    assert left == right == merge_states(c, a, b)  # exact: counts and micro-clicks are integers
    all_items, all_rewards, all_expected = (np.concatenate([x[j] for x in batches]) for j in range(3))
    assert left == feedback_state(all_items, all_rewards, all_expected)
    assert left.total == 600 and int(left.clicks.sum()) == int(all_rewards.sum())
    _, _, e = left.stats(np.arange(30))
    assert e.sum() == pytest.approx(all_expected.sum(), abs=1e-3)


def test_replicas_merge_deltas_into_the_global_state() -> None:
    cands, scores = np.arange(8), np.zeros(8)
    replicas = [build_policy({"type": "thompson", "slate_size": 2, "seed": s}) for s in range(3)]
    rng = np.random.default_rng(1)
    shown: list[np.ndarray] = []
    rewards: list[np.ndarray] = []
    for rep in replicas:
        for _ in range(20):
            s = rep.choose(cands, scores)
            r = (rng.random(2) < 0.3).astype(float)
            rep.update(s.items, r)
            shown.append(s.items)
            rewards.append(r)
    global_state = merge_states(*(rep.take_delta() for rep in replicas))
    assert global_state == feedback_state(np.concatenate(shown), np.concatenate(rewards))
    for rep in replicas:
        rep.set_state(global_state)
        assert rep.state == global_state and len(rep.delta) == 0
    assert global_state.subtract(replicas[0].state) == PolicyState()


@pytest.mark.parametrize("label", CONFIGS)
def test_json_round_trip(label: str) -> None:
    pol = build_policy({"slate_size": 3, "seed": 11, **CONFIGS[label]})
    _with_feedback(pol, np.array([3, 4, 5, 3]), [1, 0, 0, 1])
    text = pol.to_json()
    json.loads(text)  # plain JSON
    back = policy_from_json(text)
    assert type(back) is type(pol) and back.config == pol.config and back.state == pol.state
    cands, scores = np.arange(10), np.linspace(1, 0, 10)
    np.testing.assert_array_equal(
        back.choose(cands, scores, key="req-1").items, pol.choose(cands, scores, key="req-1").items
    )
    assert PolicyState.from_json(pol.state.to_json()) == pol.state


def test_seeded_and_reproducible() -> None:
    cands, scores = np.arange(30), np.random.default_rng(0).normal(size=30)
    a = build_policy({"type": "softmax", "slate_size": 5, "seed": 3})
    b = build_policy({"type": "softmax", "slate_size": 5, "seed": 3})
    seq_a = [a.choose(cands, scores).items.tolist() for _ in range(10)]
    seq_b = [b.choose(cands, scores).items.tolist() for _ in range(10)]
    assert seq_a == seq_b and len({tuple(s) for s in seq_a}) > 1  # same stream, and it does vary
    assert a.choose(cands, scores, key="r9").items.tolist() == b.choose(cands, scores, key="r9").items.tolist()


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        PolicyConfig.from_dict({"type": "epsilon_greedy", "epsilon": 1.5})
    assert err.value.key == "epsilon"
    with pytest.raises(ConfigError) as err:
        build_policy({"type": "thompson", "prior_strenght": 3})
    assert err.value.key == "prior_strenght"
    with pytest.raises(ConfigError) as err:
        build_policy({"type": "bandit"})
    assert err.value.key == "type"


def test_lift_learns_relative_to_the_model() -> None:
    """Two items the model rates alike: one clicks at 3x the model's prediction, one at a third."""
    pol = build_policy({"type": "ucb", "ucb_c": 0.0, "prior_strength": 5.0, "feedback": "lift", "slate_size": 1})
    scores = np.array([0.0, 0.0])  # p = 0.5 for both
    with pytest.raises(ValueError, match="needs the shown items' scores"):
        pol.update([0], [1])
    for _ in range(40):  # item 0: 40 impressions, 20 expected clicks, 20 clicks (lift ~1)
        pol.update([0], [_ % 2], scores=[0.0])
    for _ in range(40):  # item 1: shown with low scores (p ~ 0.12), clicked half the time (lift ~4)
        pol.update([1], [_ % 2], scores=[-2.0])
    assert pol.choose([0, 1], scores).items[0] == 1
    counts = build_policy({"type": "ucb", "ucb_c": 0.0, "prior_strength": 5.0, "slate_size": 1}, pol.state)
    n, c = counts.state.lookup(np.array([0, 1]))
    assert list(n) == [40, 40] and list(c) == [20, 20]  # raw counts cannot tell them apart


def test_feedback_must_be_binary_and_aligned() -> None:
    pol = build_policy({"type": "ucb"})
    with pytest.raises(ValueError, match="binary"):
        pol.update([1, 2], [0.5, 1])
    with pytest.raises(ValueError, match="rewards"):
        pol.update([1, 2, 3], [1, 0])
