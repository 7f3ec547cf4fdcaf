"""The exploration search space, driven by Optuna's own trials (what OptunaSearch hands it)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from lmrec.config import load_config
from lmrec.exploration.objectives import policy_config
from lmrec.tuning.exploration.config import TuneExplorationConfig
from lmrec.tuning.exploration.space import DefineSpace, baseline_points, define_space
from lmrec.tuning.search import tpe_sampler

CONFIG_DIR = Path(__file__).resolve().parents[3] / "jobs" / "configs" / "tune_exploration"
PARAMS = {  # what each policy type draws besides `policy`, in a stateful space
    "greedy": set(),
    "epsilon_greedy": {"epsilon"},
    "softmax": {"temperature"},
    "ucb": {"ucb_c", "prior_strength", "feedback"},
    "thompson": {"prior_strength", "feedback"},
}


@pytest.fixture(autouse=True)
def quiet_optuna() -> Any:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def _ask(space: DefineSpace, fixed: dict[str, Any], seed: int = 0) -> optuna.trial.Trial:
    """A real trial of a TPE study with `fixed` enqueued, after `space` has drawn from it."""
    study = optuna.create_study(direction="maximize", sampler=tpe_sampler(seed))
    study.enqueue_trial(fixed)
    trial = study.ask()
    space(trial)
    return trial


def test_search_space_is_conditional_on_the_policy() -> None:
    cfg = load_config(TuneExplorationConfig, CONFIG_DIR / "obd_random.yaml")
    space = define_space(cfg.space)
    for policy, params in PARAMS.items():
        trial = _ask(space, {"policy": policy})
        assert trial.params["policy"] == policy
        assert set(trial.params) - {"policy"} == params
        assert trial.distributions["policy"] == CategoricalDistribution(cfg.space.policies)
        for name in params - {"feedback"}:  # log-uniform over the configured range
            assert trial.distributions[name] == FloatDistribution(*getattr(cfg.space, name), log=True)
        if "feedback" in params:
            assert trial.distributions["feedback"] == CategoricalDistribution(cfg.space.feedback)
        assert policy_config(trial.params).type == policy  # every drawn point is a valid policy config
    restored = pickle.loads(pickle.dumps(space))  # Tune checkpoints the searcher by pickling it
    assert _ask(restored, {"policy": "ucb"}, seed=3).params == _ask(space, {"policy": "ucb"}, seed=3).params
    assert baseline_points(cfg.space) == [{"policy": "greedy"}, {"policy": "epsilon_greedy", "epsilon": 0.1}]


def test_every_point_the_seeded_tpe_search_draws_is_a_valid_policy() -> None:
    """TPE past its random start-up trials, as the search runs it: each point has exactly its
    policy's parameters within the space, and the same seed draws the same points."""
    cfg = load_config(TuneExplorationConfig, CONFIG_DIR / "obd_random.yaml")
    space = define_space(cfg.space)

    def run(seed: int) -> list[dict[str, Any]]:
        study = optuna.create_study(direction="maximize", sampler=tpe_sampler(seed))
        for point in baseline_points(cfg.space):
            study.enqueue_trial(point)
        study.optimize(lambda t: space(t) or float(len(t.params)), n_trials=24)
        return [t.params for t in study.trials]

    points = run(7)
    assert points[:2] == [{"policy": "greedy"}, {"policy": "epsilon_greedy", "epsilon": 0.1}]
    for params in points:
        assert set(params) - {"policy"} == PARAMS[params["policy"]]
        assert policy_config(params).type == params["policy"]
        for name in PARAMS[params["policy"]] - {"feedback"}:
            low, high = getattr(cfg.space, name)
            assert low <= params[name] <= high
    assert run(7) == points


def test_ucb_c_zero_branch_reaches_greedy_with_learning() -> None:
    cfg = load_config(TuneExplorationConfig, CONFIG_DIR / "ml100k_replay_v2.yaml")
    assert cfg.space.ucb_c_zero and cfg.replay.valid_frac > 0
    space = define_space(cfg.space)
    zero = _ask(space, {"policy": "ucb", "ucb_c_zero": True})
    positive = _ask(space, {"policy": "ucb", "ucb_c_zero": False})
    assert set(zero.params) == {"policy", "ucb_c_zero", "prior_strength", "feedback"}  # no c drawn: c = 0
    assert set(positive.params) == {"policy", "ucb_c_zero", "ucb_c", "prior_strength", "feedback"}
    assert zero.distributions["ucb_c_zero"] == CategoricalDistribution([True, False])
    assert policy_config(zero.params).ucb_c == 0.0
    assert policy_config(positive.params).ucb_c == positive.params["ucb_c"] > 0
    pc = policy_config({"policy": "ucb", "ucb_c_zero": True, "prior_strength": 20.0, "feedback": "lift"})
    assert pc.ucb_c == 0.0 and pc.feedback == "lift"
    assert policy_config({"policy": "ucb", "ucb_c_zero": False, "ucb_c": 0.3}).ucb_c == 0.3
    # the default space (and every scenario that does not ask for it) has no c = 0 branch
    plain = load_config(TuneExplorationConfig, CONFIG_DIR / "ml100k_replay.yaml")
    default = _ask(define_space(plain.space), {"policy": "ucb"})
    assert "ucb_c_zero" not in default.params and "ucb_c" in default.params


def test_stateless_search_space_leaves_out_what_has_no_effect() -> None:
    """With no item statistics (logged data, no warm start) UCB ranks as greedy does and
    Thompson's feedback setting changes nothing: neither is offered to the searcher."""
    cfg = load_config(TuneExplorationConfig, CONFIG_DIR / "obd_random.yaml")
    stateless = define_space(cfg.space, stateful=False)
    assert "ucb" not in stateless.policies() and "greedy" in stateless.policies()
    trial = _ask(stateless, {"policy": "thompson"})
    assert set(trial.params) == {"policy", "prior_strength"}
    assert "ucb" not in trial.distributions["policy"].choices
    assert "ucb" in define_space(cfg.space, stateful=True).policies()
    only_ucb = load_config(TuneExplorationConfig, None, ["space.policies=[ucb]"])
    assert define_space(only_ucb.space, stateful=False).policies() == ["ucb"]  # what was asked for, if nothing else
