"""Configs of the exploration search: the search space, Tune settings, each scenario, tracking.

Loading and validating them imports neither Ray nor Optuna.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmrec.config import ConfigModel, check
from lmrec.exploration.policies import POLICY_TYPES
from lmrec.models.sizes import ModelSpec
from lmrec.training.config import TrainConfig
from lmrec.tuning.search import check_range

METRIC = "objective"
POLICY_REGISTRY_NAME = "lmrec-exploration-policy"


class SearchSpace(ConfigModel):
    """Policy types and log-uniform ranges of their parameters."""

    policies: list[str] = Field(default_factory=lambda: list(POLICY_TYPES))
    epsilon: list[float] = Field(default_factory=lambda: [0.01, 0.5])
    temperature: list[float] = Field(default_factory=lambda: [0.05, 5.0])
    ucb_c: list[float] = Field(default_factory=lambda: [0.001, 1.0])
    prior_strength: list[float] = Field(default_factory=lambda: [1.0, 1000.0])
    feedback: list[str] = Field(default_factory=lambda: ["counts", "lift"])  # ucb, thompson
    # ucb: also offer c = 0 (a categorical `ucb_c_zero` drawn before c): greedy over the learned
    # statistics, e.g. over lift-adjusted scores with `feedback: lift`. A log-uniform c never reaches 0.
    ucb_c_zero: bool = False

    def validate_config(self) -> None:
        check(len(self.policies) > 0, "policies", "must not be empty")
        check(len(self.feedback) > 0, "feedback", "must not be empty")
        for i, f in enumerate(self.feedback):
            check(f in ("counts", "lift"), f"feedback[{i}]", f"must be 'counts' or 'lift', got {f!r}")
        for i, p in enumerate(self.policies):
            check(p in POLICY_TYPES, f"policies[{i}]", f"unknown policy {p!r}; choose from {list(POLICY_TYPES)}")
        check_range(self.epsilon, "epsilon", 0.0, 1.0, low_open=True)
        check_range(self.temperature, "temperature", 0.0, low_open=True)
        check_range(self.ucb_c, "ucb_c", 0.0, low_open=True)
        check_range(self.prior_strength, "prior_strength", 0.0, low_open=True)


class SearchConfig(ConfigModel):
    """Tune settings: budget, parallelism, scheduler and the variance penalty."""

    num_samples: int = 24
    max_concurrent: int = 4  # trials in parallel
    cpus_per_trial: float = 1.0
    scheduler: Literal["auto", "asha", "fifo"] = "auto"  # auto: ASHA when the scenario reports steps
    grace_period: int = 2  # ASHA: reports a trial makes before it can be stopped
    reduction_factor: float = 2.0
    variance_penalty: float = 1.0  # objective = estimate - penalty * standard error
    include_baselines: bool = True  # evaluate greedy and epsilon=0.1 first
    eval_repeats: int = 5  # seeds per stochastic policy in the held-out comparison
    finalists: int = 5  # replay with a validation period: top distinct configs re-run there
    valid_repeats: int = 5  # seeds per stochastic finalist on the validation period
    seed: int = 0
    name: str | None = None  # Ray Tune experiment name
    storage_path: str | None = None  # None: LMREC_HOME/ray_results
    # An interrupted search with this `name` is continued (finished trials are not re-run, the
    # searcher's state and the MLflow search run are reused); false starts it over.
    resume: bool = True

    def validate_config(self) -> None:
        check(self.num_samples >= 1, "num_samples", "must be >= 1")
        check(self.max_concurrent >= 1, "max_concurrent", "must be >= 1")
        check(self.cpus_per_trial > 0, "cpus_per_trial", "must be > 0")
        check(self.grace_period >= 1, "grace_period", "must be >= 1")
        check(self.reduction_factor > 1, "reduction_factor", "must be > 1")
        check(self.variance_penalty >= 0, "variance_penalty", "must be >= 0")
        check(self.eval_repeats >= 1, "eval_repeats", "must be >= 1")
        check(self.finalists >= 1, "finalists", "must be >= 1")
        check(self.valid_repeats >= 1, "valid_repeats", "must be >= 1")


class ObdScenarioConfig(ConfigModel):
    """Open Bandit logs: score policies by an off-policy estimate on one behaviour policy's log."""

    data_dir: str | None = None
    behavior: Literal["random", "bts"] = "random"
    campaign: Literal["all", "men", "women"] = "all"
    max_rows: int | None = None  # first rows only (quick runs)
    estimator: Literal["dr", "ips", "snips", "dm"] = "dr"
    n_folds: int = 3
    l2: float | None = None  # None: chosen by out-of-fold log-loss (lmrec) or 1.0 (obp_quickstart)
    reward_model: Literal["lmrec", "obp_quickstart"] = "lmrec"  # see lmrec.exploration.open_bandit.fit_obd_rewards
    n_bootstrap: int = 200
    n_sim: int = 300  # Monte Carlo draws for sampling policies' marginals per trial
    seed: int = 12345
    warm_start_frac: float = 0.0  # see LogsScenarioConfig.warm_start_frac

    def validate_config(self) -> None:
        check(self.max_rows is None or self.max_rows >= 100, "max_rows", "must be >= 100")
        check(self.n_folds >= 1, "n_folds", "must be >= 1")
        check(self.l2 is None or self.l2 > 0, "l2", "must be > 0")
        check(self.n_bootstrap >= 2, "n_bootstrap", "must be >= 2")
        check(self.n_sim >= 1, "n_sim", "must be >= 1")
        check(0 <= self.warm_start_frac < 1, "warm_start_frac", "must be in [0, 1)")


class LogsScenarioConfig(ConfigModel):
    """Our own feedback logs (read with Ray Data): same estimators as OBD.

    `path` is either the serving app's log folder (`feedback.log_dir`, holding `impressions/`
    and `feedback/`: clicks are joined to their slates here) or a folder of feedback-log files
    whose rewards are already joined.
    """

    path: str = ""
    drop_unrewarded: bool = False  # joined logs: rows without rewards are an error unless True
    # Serving logs: slates served in the last `attribution_window_s` seconds are left out (their
    # clicks may still arrive); older shown items without feedback count as not clicked.
    attribution_window_s: float = 600.0
    estimator: Literal["dr", "ips", "snips", "dm"] = "dr"
    n_folds: int = 3
    l2: float | None = None
    n_bootstrap: int = 200
    n_sim: int = 300
    seed: int = 0
    # UCB and Thompson learn item statistics from feedback. With warm_start_frac > 0 they learn
    # from the earliest fraction of the requests and are scored on the rest (every policy is);
    # with 0 they start empty, where UCB ranks as greedy does (the search then leaves UCB out).
    warm_start_frac: float = 0.0
    cluster_by_request: bool = True  # bootstrap whole requests, not single positions

    def validate_config(self) -> None:
        check(self.attribution_window_s >= 0, "attribution_window_s", "must be >= 0 seconds")
        check(self.n_folds >= 1, "n_folds", "must be >= 1")
        check(self.l2 is None or self.l2 > 0, "l2", "must be > 0")
        check(self.n_bootstrap >= 2, "n_bootstrap", "must be >= 2")
        check(self.n_sim >= 1, "n_sim", "must be >= 1")
        check(0 <= self.warm_start_frac < 1, "warm_start_frac", "must be in [0, 1)")


def _replay_train_default() -> TrainConfig:
    return TrainConfig(epochs=20, batch_size=128, lr=2e-3, strategy="none", sliding_window=True, log_every_steps=1000)


class ReplayScenarioConfig(ConfigModel):
    """MovieLens replay: time split into train (model) / tune (search) / [validation] / held-out.

    With `valid_frac` = 0 the search's best trial is the tuned policy and the rest of the
    timeline after the tune period is held out. With `valid_frac` > 0 the search's top
    `search.finalists` configurations are re-run on the validation period, the best there
    is the tuned policy, and only what follows the validation period is held out (test).
    """

    dataset: str = "ml-100k"
    data_dir: str | None = None
    scorer: Literal["seqrec", "popularity"] = "seqrec"
    model_uri: str | None = None  # models:/, runs:/ or a folder; None: train on the train period
    train_frac: float = 0.5  # interactions before this time quantile train the model
    tune_frac: float = 0.25  # the next quantile range is searched on; the rest is held out
    valid_frac: float = 0.0  # then a validation range that picks among the search's finalists (0: none)
    num_candidates: int = 50
    slate_size: int = 5
    stride: int = 10
    horizon: int = 10
    click_threshold: float = 4.0
    min_history: int = 5
    max_events: int | None = None  # per split (random subset, kept in time order)
    calibration_events: int = 3000
    report_every: int = 250
    min_user_interactions: int = 5  # k-core of the model's training data
    min_item_interactions: int = 5
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainConfig = Field(default_factory=_replay_train_default)
    seed: int = 0

    def validate_config(self) -> None:
        check(0 < self.train_frac < 1, "train_frac", "must be in (0, 1)")
        check(0 < self.tune_frac < 1 - self.train_frac, "tune_frac", "must be in (0, 1 - train_frac)")
        check(
            0 <= self.valid_frac < 1 - self.train_frac - self.tune_frac,
            "valid_frac",
            "must be in [0, 1 - train_frac - tune_frac): something must be left to hold out",
        )
        check(self.num_candidates >= 2, "num_candidates", "must be >= 2")
        check(1 <= self.slate_size <= self.num_candidates, "slate_size", "must be in [1, num_candidates]")
        check(self.stride >= 1 and self.horizon >= 1, "stride", "stride and horizon must be >= 1")
        check(self.min_history >= 1, "min_history", "must be >= 1")
        check(self.max_events is None or self.max_events >= 10, "max_events", "must be >= 10")
        check(self.calibration_events >= 10, "calibration_events", "must be >= 10")
        check(self.report_every >= 1, "report_every", "must be >= 1")
        check(self.train.num_workers == 1, "train.num_workers", "the replay model trains in-process: use 1")


class ExplorationTracking(ConfigModel):
    """Where the search is tracked and under which registered name and alias its best policy goes.

    Its own section (not TrackingConfig) so that a partial override such as
    `tracking.alias=x` keeps these defaults instead of the SeqRec model's.
    """

    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI, else SQLite under LMREC_HOME
    experiment: str = "lmrec-exploration"
    run_name: str | None = None
    parent_run_id: str | None = None  # nest the search under another run (a pipeline)
    register: bool = True
    model_name: str = POLICY_REGISTRY_NAME
    alias: str = "candidate"

    def validate_config(self) -> None:
        check(bool(self.experiment), "experiment", "must not be empty")
        check(bool(self.model_name), "model_name", "must not be empty")
        check(self.alias.replace("-", "").replace("_", "").isalnum(), "alias", f"invalid alias {self.alias!r}")


class TuneExplorationConfig(ConfigModel):
    """Everything `jobs/tune_exploration.py` needs."""

    scenario: Literal["obd", "logs", "replay"] = "obd"
    obd: ObdScenarioConfig = Field(default_factory=ObdScenarioConfig)
    logs: LogsScenarioConfig = Field(default_factory=LogsScenarioConfig)
    replay: ReplayScenarioConfig = Field(default_factory=ReplayScenarioConfig)
    space: SearchSpace = Field(default_factory=SearchSpace)
    search: SearchConfig = Field(default_factory=SearchConfig)
    tracking: ExplorationTracking = Field(default_factory=ExplorationTracking)
    out: str | None = None  # also write the summary JSON (and best policy JSON next to it) here

    def validate_config(self) -> None:
        if self.scenario == "logs":
            check(bool(self.logs.path), "logs.path", "must be set for scenario 'logs'")
