"""Replay with a validation period: finalists of the search are re-run there, the test comparison is paired."""

from __future__ import annotations

import numpy as np
import pytest

from lmrec.exploration.objectives import ReplayScenario
from lmrec.exploration.replay import ReplayEvents
from lmrec.tuning.exploration.selection import compare_policies, select_on_validation


def _events(n: int, seed: int, reverse: bool) -> ReplayEvents:
    """20 candidates ranked 0..19 by the model; true click rates rise (reverse) or fall with rank."""
    rng = np.random.default_rng(seed)
    rates = np.linspace(0.05, 0.6, 20) if reverse else np.linspace(0.6, 0.05, 20)
    cands = np.tile(np.arange(20), (n, 1))
    scores = np.tile(np.linspace(1.0, -1.0, 20), (n, 1)).astype(np.float32)
    clicks = rng.random((n, 20)) < rates
    return ReplayEvents(np.arange(n), np.zeros(n, dtype=np.int64), cands, scores, clicks)


def _scenario(valid_reverse: bool) -> ReplayScenario:
    return ReplayScenario(
        _events(400, 0, True),
        _events(400, 2, True),
        3,
        100,
        {"slate_size": 3},
        {},
        valid=_events(400, 1, valid_reverse),
    )


def _trial(params: dict, objective: float, events: int = 400) -> dict:
    return {"params": params, "metrics": {"objective": objective, "estimate": objective, "events": float(events)}}


TRIALS = [
    _trial({"policy": "greedy"}, 0.50),
    _trial({"policy": "greedy"}, 0.50),  # a duplicate configuration: one finalist
    _trial({"policy": "ucb", "ucb_c_zero": True, "prior_strength": 5.0, "feedback": "counts"}, 0.40),
    _trial({"policy": "epsilon_greedy", "epsilon": 0.2}, 0.30),
    _trial({"policy": "thompson", "prior_strength": 2.0, "feedback": "counts"}, 0.90, events=100),  # ASHA-stopped
]


def test_validation_picks_among_distinct_finished_finalists() -> None:
    chosen, rows = select_on_validation(TRIALS, _scenario(valid_reverse=True), penalty=1.0, finalists=5, repeats=2)
    assert [r["params"]["policy"] for r in rows] == [
        "greedy",
        "ucb",
        "epsilon_greedy",
    ]  # search order, no stopped trial
    assert sum(r["chosen"] for r in rows) == 1
    best = max(rows, key=lambda r: r["valid"]["objective"])
    assert best["chosen"] and chosen["params"] == best["params"]
    # where the model's ranking is wrong, a policy that learns beats greedy on validation
    assert chosen["params"]["policy"] == "ucb"
    assert rows[0]["valid"]["repeats"] == 1.0 and rows[2]["valid"]["repeats"] == 2.0  # deterministic: one run
    _, top1 = select_on_validation(TRIALS, _scenario(True), penalty=1.0, finalists=1, repeats=2)
    assert len(top1) == 1 and top1[0]["chosen"]


def test_validation_needs_a_validation_period() -> None:
    sc = _scenario(True)
    sc.valid = None
    with pytest.raises(ValueError, match="validation period"):
        select_on_validation(TRIALS, sc, penalty=1.0)


def test_held_out_comparison_is_paired_with_greedy() -> None:
    from lmrec.exploration.policies import PolicyConfig

    sc = _scenario(True)
    tuned = PolicyConfig(type="ucb", ucb_c=0.0, prior_strength=5.0, slate_size=3)
    comp = compare_policies(sc, tuned, penalty=1.0, repeats=3, seed=7)
    greedy = comp["greedy"]
    assert greedy["diff_vs_greedy"] == 0.0 and greedy["diff_vs_greedy_se"] == 0.0
    eps = comp["epsilon_greedy (epsilon=0.1)"]
    assert eps["seeds"] == [7, 8, 9] and len(eps["per_seed"]) == 3
    assert eps["diff_vs_greedy"] == pytest.approx(eps["estimate"] - greedy["estimate"])
    name = next(k for k in comp if k.startswith("tuned"))
    assert comp[name]["diff_vs_greedy"] > 3 * comp[name]["diff_vs_greedy_se"] > 0  # learning wins on reversed rates
    assert comp[name]["seeds_above_greedy"] == 1.0  # deterministic: one run
