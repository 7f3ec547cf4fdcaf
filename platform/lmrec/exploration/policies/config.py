"""Which exploration policy and its parameters: the config a search saves and serving loads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from lmrec.config import ConfigModel, check, evolve, from_dict, to_dict

PolicyType = Literal["greedy", "epsilon_greedy", "softmax", "ucb", "thompson"]
POLICY_TYPES: tuple[str, ...] = ("greedy", "epsilon_greedy", "softmax", "ucb", "thompson")
POLICY_FORMAT = "lmrec-exploration-policy"
POLICY_FORMAT_VERSION = 1


class PolicyConfig(ConfigModel):
    """Which policy and its parameters; the JSON a search saves and serving loads.

    Scores are first mapped to logits `z = score_scale * score + score_shift`
    (a Platt calibration fitted where the scores come from), so the Thompson
    prior mean `sigmoid(z)` is a click probability.
    """

    type: PolicyType = "greedy"
    slate_size: int = 5  # K when `choose` is not given one
    epsilon: float = 0.1  # epsilon_greedy: P(show a uniformly random slate)
    temperature: float = 1.0  # softmax: weights exp(z / temperature)
    ucb_c: float = 1.0  # ucb: bonus c * sqrt(log(t + 1) / n)
    prior_strength: float = 10.0  # ucb, thompson: pseudo-impressions the model score is worth
    prior: Literal["sigmoid", "identity"] = "sigmoid"  # z -> prior click probability
    feedback: Literal["counts", "lift"] = "counts"  # ucb, thompson: pool raw clicks, or clicks relative to the model
    score_scale: float = 1.0
    score_shift: float = 0.0
    n_sim: int = 1000  # Monte Carlo draws for the marginals of sampling policies (OPE, action_dist)
    quad_points: int = 128  # quadrature points for the logged propensity of a sampled slate
    seed: int = 0

    def validate_config(self) -> None:
        check(self.type in POLICY_TYPES, "type", f"unknown policy {self.type!r}; choose one of {list(POLICY_TYPES)}")
        check(self.slate_size >= 1, "slate_size", f"must be >= 1, got {self.slate_size}")
        check(0.0 <= self.epsilon <= 1.0, "epsilon", f"must be in [0, 1], got {self.epsilon}")
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        check(self.ucb_c >= 0, "ucb_c", f"must be >= 0, got {self.ucb_c}")
        check(self.prior_strength > 0, "prior_strength", f"must be > 0, got {self.prior_strength}")
        check(
            self.score_scale > 0,
            "score_scale",
            f"must be > 0 (calibration must keep the ranking), got {self.score_scale}",
        )
        check(self.n_sim >= 1, "n_sim", f"must be >= 1, got {self.n_sim}")
        check(self.quad_points >= 8, "quad_points", f"must be >= 8, got {self.quad_points}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyConfig:
        """Validated config; unknown keys and bad values raise ConfigError naming the key."""
        return from_dict(cls, data)

    def replace(self, **changes: Any) -> PolicyConfig:
        return evolve(self, **changes)
