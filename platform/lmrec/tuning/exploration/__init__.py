"""Ray Tune search over exploration policies, scored by off-policy evaluation or replay.

Scenarios: `obd` (Open Bandit logs, DR estimate), `logs` (our own feedback logs read through
Ray Data, DR estimate), `replay` (MovieLens replay over a trained model's candidates, clicks
per event, intermediate reports for ASHA).

Modules: `config` (the job's dataclasses), `scenarios` (data prepared on the driver),
`space` (the Optuna define-by-run space, baselines), `selection` (best trial, validation
finalists, comparison with the baselines), `report` (result, tables, curves), `driver`
(`run_exploration_search`, `preflight`, the trial function, `replay_benchmark`).
"""

from lmrec.tuning.exploration.config import (
    METRIC,
    POLICY_REGISTRY_NAME,
    ExplorationTracking,
    LogsScenarioConfig,
    ObdScenarioConfig,
    ReplayScenarioConfig,
    SearchConfig,
    SearchSpace,
    TuneExplorationConfig,
)
from lmrec.tuning.exploration.driver import preflight, replay_benchmark, run_exploration_search
from lmrec.tuning.exploration.report import SearchResult
from lmrec.tuning.exploration.space import DefineSpace, baseline_points, define_space

__all__ = [
    "METRIC",
    "POLICY_REGISTRY_NAME",
    "DefineSpace",
    "ExplorationTracking",
    "LogsScenarioConfig",
    "ObdScenarioConfig",
    "ReplayScenarioConfig",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "TuneExplorationConfig",
    "baseline_points",
    "define_space",
    "preflight",
    "replay_benchmark",
    "run_exploration_search",
]
