"""The search space as Optuna sees it: a define-by-run function of a trial, and the baselines tried first."""

from __future__ import annotations

from typing import Any

from lmrec.config import to_dict
from lmrec.tuning.exploration.config import SearchSpace


class DefineSpace:
    """Optuna define-by-run space: the parameters sampled depend on the policy type.

    A module-level class (not a closure) because Tune pickles the searcher to checkpoint it.
    """

    def __init__(self, space: SearchSpace, stateful: bool = True) -> None:
        self.space = to_dict(space)
        self.stateful = stateful

    def policies(self) -> list[str]:
        """Policy types offered. Without item statistics (logged data, no warm start) UCB ranks
        exactly as greedy does, so it is left out rather than spend trials on copies of greedy."""
        types = list(self.space["policies"])
        if not self.stateful and "ucb" in types and len(types) > 1:
            types.remove("ucb")
        return types

    def __call__(self, trial: Any) -> None:
        sp = self.space
        t = trial.suggest_categorical("policy", self.policies())
        if t == "epsilon_greedy":
            trial.suggest_float("epsilon", sp["epsilon"][0], sp["epsilon"][1], log=True)
        elif t == "softmax":
            trial.suggest_float("temperature", sp["temperature"][0], sp["temperature"][1], log=True)
        elif t == "ucb":
            if not (sp.get("ucb_c_zero") and trial.suggest_categorical("ucb_c_zero", [True, False])):
                trial.suggest_float("ucb_c", sp["ucb_c"][0], sp["ucb_c"][1], log=True)
            trial.suggest_float("prior_strength", sp["prior_strength"][0], sp["prior_strength"][1], log=True)
            trial.suggest_categorical("feedback", list(sp["feedback"]))
        elif t == "thompson":
            trial.suggest_float("prior_strength", sp["prior_strength"][0], sp["prior_strength"][1], log=True)
            if self.stateful:  # how feedback is counted matters only once there is feedback
                trial.suggest_categorical("feedback", list(sp["feedback"]))
        return None


def define_space(space: SearchSpace, stateful: bool = True) -> DefineSpace:
    """The define-by-run space of `space` (`stateful`: policies can learn item statistics)."""
    return DefineSpace(space, stateful)


def baseline_points(space: SearchSpace) -> list[dict[str, Any]]:
    """Greedy and epsilon = 0.1 as the first trials, when the space contains them."""
    points: list[dict[str, Any]] = []
    if "greedy" in space.policies:
        points.append({"policy": "greedy"})
    if "epsilon_greedy" in space.policies and space.epsilon[0] <= 0.1 <= space.epsilon[1]:
        points.append({"policy": "epsilon_greedy", "epsilon": 0.1})
    return points
