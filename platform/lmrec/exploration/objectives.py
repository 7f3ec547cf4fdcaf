"""What an exploration search maximises, for one policy configuration (Ray-free).

Two kinds of scenario:
- logged data (Open Bandit logs, or our own feedback logs): the off-policy
  estimate (DR by default) of the policy's mean reward per shown position,
  minus `penalty` times its bootstrap standard error; one number, no steps;
- replay: the policy runs online over precomputed events; the objective is
  clicks per event minus `penalty` times its standard error, reported every
  `report_every` events (the intermediate steps ASHA stops trials on).

The Tune trial in `lmrec.tuning.exploration.driver` only forwards these reports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lmrec.data.open_bandit import OBDLog
from lmrec.exploration.log_ope import LoggedSlates, evaluate_policy_on_logs, state_from_samples
from lmrec.exploration.open_bandit import OBDRewards
from lmrec.exploration.policies import Policy, PolicyConfig, build_policy
from lmrec.exploration.replay import ReplayEvents, run_replay
from lmrec.exploration.reward_model import CrossFitRewards

SEARCHED_PARAMS = ("epsilon", "temperature", "ucb_c", "prior_strength", "feedback")
Report = Callable[[dict[str, float]], None]
ReplayPeriod = Literal["tune", "valid", "heldout"]


@dataclass
class LoggedScenario:
    """Logged samples, their cross-fitted reward model, and how to score a policy on them."""

    logged: LoggedSlates
    rewards: CrossFitRewards
    slate_size: int
    estimator: str = "dr"
    n_bootstrap: int = 200
    base_policy: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = "logged"
    # Earlier logs a stateful policy (UCB, Thompson) learns its item statistics from before it is
    # scored on `logged`; None: every policy starts from empty statistics, where UCB is greedy.
    warm: LoggedSlates | None = None
    cluster_by_request: bool = False  # bootstrap whole requests (a slate's positions are correlated)

    @property
    def has_steps(self) -> bool:
        return False

    @property
    def stateful(self) -> bool:
        """Whether item statistics exist for UCB and Thompson to use (see `warm`)."""
        return self.warm is not None


@dataclass
class ReplayScenario:
    """Replay events for the search (`tune`), for picking among its finalists (`valid`,
    optional) and for the final comparison (`heldout`)."""

    tune: ReplayEvents
    heldout: ReplayEvents
    slate_size: int
    report_every: int = 250
    base_policy: dict[str, Any] = field(default_factory=dict)  # calibration: score_scale, score_shift
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = "replay"
    valid: ReplayEvents | None = None

    def events(self, period: ReplayPeriod) -> ReplayEvents:
        if period == "valid":
            if self.valid is None:
                raise ValueError("this replay scenario has no validation period (replay.valid_frac = 0)")
            return self.valid
        return self.heldout if period == "heldout" else self.tune

    @property
    def has_steps(self) -> bool:
        return True

    @property
    def num_reports(self) -> int:
        return -(-len(self.tune) // self.report_every)


Scenario = LoggedScenario | ReplayScenario


def obd_logged(log: OBDLog, rewards: OBDRewards) -> LoggedSlates:
    """OBD samples as LoggedSlates: each sample is its own request over all items."""
    n, a = log.n, log.n_actions
    return LoggedSlates(
        row=np.arange(n),
        rank=log.positions,
        action=log.actions,
        reward=log.rewards,
        pscore=log.pscore,
        candidates=np.broadcast_to(np.arange(a), (n, a)).copy(),
        scores=rewards.scores,
        mask=np.ones((n, a), dtype=bool),
        slate_len=np.full(n, log.len_list),
    )


def policy_config(params: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> PolicyConfig:
    """A PolicyConfig from Tune's sampled params ({"policy": type, ...}) over `base` settings."""
    data = dict(base or {})
    data["type"] = params.get("policy", params.get("type"))
    for key in SEARCHED_PARAMS:
        if key in params and params[key] is not None:
            data[key] = params[key]
    if params.get("ucb_c_zero") is True:  # the search space's explicit c = 0 branch
        data["ucb_c"] = 0.0
    return PolicyConfig.from_dict(data)


def logged_policy(scenario: LoggedScenario, config: PolicyConfig) -> Policy:
    """`config` as it would run after the scenario's warm-up logs (empty statistics without them)."""
    policy = build_policy(config)
    if scenario.warm is not None:
        policy.set_state(state_from_samples(scenario.warm, policy), keep_delta=False)
    return policy


def evaluate_logged(scenario: LoggedScenario, config: PolicyConfig, penalty: float, seed: int = 0) -> dict[str, float]:
    """One off-policy estimate of `config` and the penalised objective."""
    est = evaluate_policy_on_logs(
        scenario.logged,
        logged_policy(scenario, config),
        [scenario.estimator],
        scenario.rewards,
        scenario.n_bootstrap,
        seed,
        cluster_by_request=scenario.cluster_by_request,
    )[scenario.estimator]
    return {
        "objective": est.penalised(penalty),
        "estimate": est.value,
        "std_err": est.std_err,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "samples": float(est.n),
    }


def evaluate_replay(
    scenario: ReplayScenario,
    config: PolicyConfig,
    penalty: float,
    report: Report | None = None,
    heldout: bool = False,
    period: ReplayPeriod | None = None,
) -> dict[str, float]:
    """Run the policy over the tune (or `period`'s) events; `report` gets every intermediate summary."""
    events = scenario.events(period or ("heldout" if heldout else "tune"))

    def forward(step: int, summary: dict[str, float]) -> None:
        if report is not None:
            report(replay_metrics(summary, penalty))

    res = run_replay(
        events,
        build_policy(config),
        scenario.slate_size,
        report_every=scenario.report_every if report else None,
        callback=forward if report else None,
    )
    return replay_metrics(res.summary(), penalty)


def replay_metrics(summary: dict[str, float], penalty: float) -> dict[str, float]:
    return {
        **summary,
        "objective": summary["reward_per_event"] - penalty * summary["reward_se"],
        "estimate": summary["reward_per_event"],
    }


def evaluate(
    scenario: Scenario, config: PolicyConfig, penalty: float, report: Report | None = None, seed: int = 0
) -> dict[str, float]:
    """The objective of `config` on `scenario` (reports intermediate steps for replay)."""
    if isinstance(scenario, ReplayScenario):
        return evaluate_replay(scenario, config, penalty, report)
    out = evaluate_logged(scenario, config, penalty, seed)
    if report is not None:
        report(out)
    return out
