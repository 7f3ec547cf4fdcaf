"""Ray Tune search over exploration policies, scored by off-policy evaluation or replay.

    config -> scenario (driver) -> parent MLflow run -> Tuner(Optuna [+ ASHA]) ->
    best config -> comparison with greedy and epsilon=0.1 -> policy.json artifact,
    tags and (optionally) a registered version with an alias.

Scenarios: `obd` (Open Bandit logs, DR estimate), `logs` (our own feedback logs
read through Ray Data, DR estimate), `replay` (MovieLens replay over a trained
model's candidates, clicks per event, intermediate reports for ASHA). The
objective of a trial is `lmrec.exploration.objectives.evaluate`; trials only
forward its reports. This module imports Ray inside functions, so loading and
validating a config never touches Ray.

API facts used (Ray 2.60, read from the installed source): `ray.tune.Tuner`,
`ray.tune.TuneConfig(search_alg=..., scheduler=..., num_samples=...,
max_concurrent_trials=...)`, `ray.tune.RunConfig(callbacks=[MLflowLoggerCallback])`,
`ray.tune.search.optuna.OptunaSearch(space=<define-by-run fn>, points_to_evaluate=...)`,
`ray.tune.schedulers.ASHAScheduler(max_t, grace_period, reduction_factor)`,
`ray.tune.report(metrics)`, `MLflowLoggerCallback(tags={"mlflow.parentRunId": ...})`
(every trial run gets the tags, which nests it under the search run).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from lmrec.config import ConfigModel, check, config_hash, flatten, to_dict
from lmrec.exploration.objectives import (
    LoggedScenario,
    ReplayScenario,
    Scenario,
    evaluate,
    obd_logged,
    policy_config,
    replay_metrics,
)
from lmrec.exploration.policies import POLICY_TYPES, PolicyConfig
from lmrec.models.sizes import ModelSpec
from lmrec.tracking.config import TrackingConfig
from lmrec.training.config import TrainConfig

METRIC = "objective"
POLICY_REGISTRY_NAME = "lmrec-exploration-policy"


# ------------------------------------------------------------------ config


def _check_range(values: list[float], key: str, upper: float | None = None) -> None:
    check(
        len(values) == 2 and 0 < values[0] <= values[1], key, f"must be [low, high] with 0 < low <= high, got {values}"
    )
    if upper is not None:
        check(values[1] <= upper, key, f"high must be <= {upper}, got {values[1]}")


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
        _check_range(self.epsilon, "epsilon", upper=1.0)
        _check_range(self.temperature, "temperature")
        _check_range(self.ucb_c, "ucb_c")
        _check_range(self.prior_strength, "prior_strength")


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


# ------------------------------------------------------------------ scenarios (driver side)


def prepare_scenario(cfg: TuneExplorationConfig) -> Scenario:
    """Load data, fit reward models or build replay events: everything trials share."""
    if cfg.scenario == "obd":
        return prepare_obd(cfg.obd)
    if cfg.scenario == "logs":
        return prepare_logs(cfg.logs)
    return prepare_replay(cfg.replay)


def prepare_obd(oc: ObdScenarioConfig) -> LoggedScenario:
    from lmrec.data.open_bandit import load_obd
    from lmrec.exploration.open_bandit import fit_obd_rewards

    log = load_obd(oc.data_dir, oc.behavior, oc.campaign)
    if oc.max_rows is not None and oc.max_rows < log.n:
        log = _head(log, oc.max_rows)
    rewards = fit_obd_rewards(
        log, oc.n_folds, "auto" if oc.l2 is None else oc.l2, oc.seed, reward_model=oc.reward_model
    )
    scenario = LoggedScenario(
        obd_logged(log, rewards),
        rewards.fit,
        log.len_list,
        oc.estimator,
        oc.n_bootstrap,
        base_policy={"slate_size": log.len_list, "n_sim": oc.n_sim, "seed": oc.seed},
        info={
            "source": str(log.path),
            "samples": log.n,
            "behavior_value": log.on_policy_value,
            "reward_model": oc.reward_model,
            "reward_model_l2": rewards.fit.l2,
            "reward_model_oof_log_loss": rewards.fit.oof_log_loss,
        },
    )
    return with_warm_start(scenario, oc.warm_start_frac)


def with_warm_start(scenario: LoggedScenario, frac: float) -> LoggedScenario:
    """Split the logs in time: the first `frac` of requests warm up stateful policies, the rest
    is what every policy is scored on (the cross-fitted reward model is kept for those samples)."""
    if frac <= 0:
        return scenario
    import dataclasses

    from lmrec.exploration.log_ope import subset_rewards

    warm, rest, samples = scenario.logged.split(frac)
    info = {
        **scenario.info,
        "warm_start_requests": int(len(warm.slate_len)),
        "warm_start_samples": warm.n,
        "scored_requests": int(len(rest.slate_len)),
        "scored_samples": rest.n,
        "scored_behavior_value": float(rest.reward.mean()),
    }
    return dataclasses.replace(
        scenario, logged=rest, rewards=subset_rewards(scenario.rewards, samples), warm=warm, info=info
    )


def _head(log: Any, n: int) -> Any:
    import dataclasses

    sl = slice(0, n)
    return dataclasses.replace(
        log,
        actions=log.actions[sl],
        positions=log.positions[sl],
        rewards=log.rewards[sl],
        pscore=log.pscore[sl],
        timestamps=log.timestamps[sl],
        user_codes=log.user_codes[sl],
        affinity=log.affinity[sl],
    )


def prepare_logs(lc: LogsScenarioConfig) -> LoggedScenario:
    from lmrec.exploration.log_ope import LoggedSlates, fit_log_rewards
    from lmrec.training.trainer import ensure_ray
    from lmrec.tuning.feedback_io import is_served_log_dir, read_feedback_table, read_served_logs

    ensure_ray()
    join_info: dict[str, Any] = {}
    if is_served_log_dir(lc.path):  # the serving app's folder: join clicks to slates here
        table, join_info = read_served_logs(lc.path, lc.attribution_window_s)
    else:
        table = read_feedback_table(lc.path)  # Ray Data, validated per file
        table = table.sort_by(
            [("timestamp", "ascending"), ("request_id", "ascending")]
        )  # time order for warm_start_frac
    logged = LoggedSlates.from_table(table, lc.path, lc.drop_unrewarded)
    rewards = fit_log_rewards(logged, lc.n_folds, "auto" if lc.l2 is None else lc.l2, lc.seed)
    k = int(np.bincount(logged.slate_len).argmax())
    scenario = LoggedScenario(
        logged,
        rewards,
        k,
        lc.estimator,
        lc.n_bootstrap,
        base_policy={"slate_size": k, "n_sim": lc.n_sim, "seed": lc.seed},
        info={
            "source": lc.path,
            "requests": int(len(logged.slate_len)),
            "samples": logged.n,
            "behavior_value": float(logged.reward.mean()),
            "reward_model_l2": rewards.l2,
            **join_info,
        },
        cluster_by_request=lc.cluster_by_request,
    )
    return with_warm_start(scenario, lc.warm_start_frac)


def _replay_cache_dir(rc: ReplayScenarioConfig, source_fingerprint: str) -> Path:
    from lmrec.paths import lmrec_home

    rd = to_dict(rc)
    if not rd.get("valid_frac"):  # configs from before the validation period keep their caches
        rd.pop("valid_frac", None)
    if rc.model_uri and rc.model_uri.startswith("models:/"):  # an alias moves: key on the version it names now
        from lmrec.tracking.mlflow_utils import resolve_model_version

        mv = resolve_model_version(rc.model_uri)
        rd["model_uri"] = f"models:/{mv['name']}/{mv['version']}"
    key = config_hash({"replay": rd, "source": source_fingerprint, "version": 1})[:16]
    return lmrec_home() / "exploration" / "replay" / f"{rc.dataset}-{key}"


def load_interactions(dataset: str, data_dir: str | None) -> tuple[Any, str]:
    """The raw interaction table of a MovieLens/SASRec dataset and its file fingerprint.

    `synthetic` (for machines without MovieLens, e.g. tests) generates 600 users over 300
    items with the hidden cluster chain; every interaction is rated 5 (a click).
    """
    if dataset == "synthetic":
        import pyarrow as pa

        from lmrec.data.config import SyntheticConfig
        from lmrec.data.synthetic import generate

        scfg = SyntheticConfig(num_users=600, num_items=300, num_clusters=12, mean_seq_len=30)
        table = generate(scfg)
        i = table.schema.get_field_index("rating")  # by name, not position
        table = table.set_column(i, "rating", pa.array(np.full(table.num_rows, 5.0, dtype=np.float32)))
        return table, f"synthetic:{scfg.num_users}x{scfg.num_items}x{scfg.num_clusters}x{scfg.mean_seq_len}:{scfg.seed}"
    from lmrec.data.download import locate_dataset
    from lmrec.data.prepare import _file_fingerprint
    from lmrec.data.readers import dataset_spec, read_interactions
    from lmrec.paths import data_dir as resolve

    spec = dataset_spec(dataset)
    path = locate_dataset(spec, resolve(data_dir), download=False)
    return read_interactions(path, spec.fmt), _file_fingerprint([str(path)])


def train_replay_model(interactions: Any, before_ts: int, rc: ReplayScenarioConfig, out_dir: Path) -> Path:
    """Train a SeqRec model on interactions before `before_ts` only (no look-ahead); returns its folder."""
    import pyarrow.compute as pc

    from lmrec.data.config import DataConfig
    from lmrec.data.prepare import prepare_dataset
    from lmrec.evaluation.config import EvalConfig
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.loop import EXPORT_DIR, LocalContext, run_training

    pre = interactions.filter(pc.less(interactions["ts"], before_ts)).sort_by(
        [("ts", "ascending"), ("user", "ascending"), ("item", "ascending")]
    )
    data_root = out_dir / "data"
    (data_root / "sasrec").mkdir(parents=True, exist_ok=True)
    lines = [f"{u} {i}" for u, i in zip(pre["user"].to_pylist(), pre["item"].to_pylist())]
    (data_root / "sasrec" / "replay_train.txt").write_text("\n".join(lines) + "\n")  # line order = time order
    dcfg = DataConfig(
        dataset="sasrec:replay_train",
        data_dir=str(data_root),
        download=False,
        min_user_interactions=rc.min_user_interactions,
        min_item_interactions=rc.min_item_interactions,
    )
    prepared = prepare_dataset(dcfg, cache_root=out_dir / "prepared")
    job = TrainJobConfig(
        data=dcfg,
        model=rc.model,
        train=rc.train,
        eval=EvalConfig(ks=[10], protocols=["full"], every_epochs=0, max_users=500),
        tracking=TrackingConfig(register=False),
        prepared_path=str(prepared.path),
    )
    ctx = LocalContext(root=out_dir / "train")
    metrics = run_training(job, ctx)
    model_dir = out_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(ctx.checkpoints[-1] / EXPORT_DIR, model_dir)
    shutil.rmtree(out_dir / "train", ignore_errors=True)  # checkpoints are not needed once exported
    (out_dir / "model_metrics.json").write_text(
        json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, indent=1)
    )
    return model_dir


def prepare_replay(rc: ReplayScenarioConfig) -> ReplayScenario:
    """Events for the tune, validation (if any) and held-out periods (cached under LMREC_HOME/exploration/replay)."""
    from lmrec.exploration.replay import (
        PopularityScorer,
        ReplayEvents,
        SeqRecScorer,
        build_replay_events,
        fit_calibration,
    )

    interactions, fingerprint = load_interactions(rc.dataset, rc.data_dir)
    cache = _replay_cache_dir(rc, fingerprint)
    meta_path = cache / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        valid = ReplayEvents.load(cache / "valid.npz") if rc.valid_frac > 0 else None
        return ReplayScenario(
            ReplayEvents.load(cache / "tune.npz"),
            ReplayEvents.load(cache / "heldout.npz"),
            rc.slate_size,
            rc.report_every,
            meta["base_policy"],
            meta["info"],
            valid=valid,
        )
    t0 = time.time()
    cache.mkdir(parents=True, exist_ok=True)
    ts = interactions["ts"].to_numpy()
    fracs = [rc.train_frac, rc.train_frac + rc.tune_frac, rc.train_frac + rc.tune_frac + rc.valid_frac]
    t1, t2, t3 = (int(v) for v in np.quantile(ts, fracs))
    scorer: Any
    model_info: dict[str, Any] = {}
    if rc.scorer == "popularity":
        scorer = PopularityScorer(interactions, t1)
    else:
        from lmrec.models.artifacts import load_model_dir

        if rc.model_uri:
            from lmrec.tracking.mlflow_utils import download_model

            model_dir = download_model(rc.model_uri)
            model_info["model_uri"] = rc.model_uri
            model_info["warning"] = "a model trained on all data has seen the replay periods"
        else:
            model_dir = train_replay_model(interactions, t1, rc, cache)
            model_info["trained_before_ts"] = t1
            if (cache / "model_metrics.json").exists():
                model_info["metrics"] = json.loads((cache / "model_metrics.json").read_text())
        model, vocab, _ = load_model_dir(model_dir)
        scorer = SeqRecScorer(model, vocab, model.config.max_seq_len)
    common = dict(
        num_candidates=rc.num_candidates,
        stride=rc.stride,
        horizon=rc.horizon,
        click_threshold=rc.click_threshold,
        min_history=rc.min_history,
        seed=rc.seed,
    )
    calib = build_replay_events(interactions, scorer, int(ts.min()), t1, max_events=rc.calibration_events, **common)
    scale, shift = fit_calibration(calib)
    tune_ev = build_replay_events(interactions, scorer, t1, t2, max_events=rc.max_events, **common)
    valid_ev = (
        build_replay_events(interactions, scorer, t2, t3, max_events=rc.max_events, **common)
        if rc.valid_frac > 0
        else None
    )
    held_ev = build_replay_events(interactions, scorer, t3, int(ts.max()) + 1, max_events=rc.max_events, **common)
    if len(tune_ev) == 0 or len(held_ev) == 0 or (valid_ev is not None and len(valid_ev) == 0):
        raise ValueError(
            f"replay: no decision points in the tune ({len(tune_ev)}), validation "
            f"({None if valid_ev is None else len(valid_ev)}) or held-out ({len(held_ev)}) period"
        )
    base = {"slate_size": rc.slate_size, "score_scale": scale, "score_shift": shift, "seed": rc.seed}
    info = {
        "dataset": rc.dataset,
        "scorer": rc.scorer,
        "split_ts": [t1, t2, t3] if valid_ev is not None else [t1, t2],
        "tune_events": len(tune_ev),
        "heldout_events": len(held_ev),
        "calibration": {"scale": scale, "shift": shift, "events": len(calib)},
        "tune_oracle_per_event": float(tune_ev.oracle(rc.slate_size).mean()),
        "heldout_oracle_per_event": float(held_ev.oracle(rc.slate_size).mean()),
        "build_seconds": round(time.time() - t0, 1),
        **model_info,
    }
    if valid_ev is not None:
        info.update(valid_events=len(valid_ev), valid_oracle_per_event=float(valid_ev.oracle(rc.slate_size).mean()))
        valid_ev.save(cache / "valid.npz")
    tune_ev.save(cache / "tune.npz")
    held_ev.save(cache / "heldout.npz")
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"base_policy": base, "info": info}, indent=1))
    tmp.replace(meta_path)
    return ReplayScenario(tune_ev, held_ev, rc.slate_size, rc.report_every, base, info, valid=valid_ev)


# ------------------------------------------------------------------ search


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
    return DefineSpace(space, stateful)


def preflight(cfg: TuneExplorationConfig) -> None:
    """Check that what the search reads exists, before any Ray resource is requested.

    Raises ConfigError naming the key whose file or folder is missing."""
    from lmrec.config import ConfigError
    from lmrec.tuning.feedback_io import is_local_path

    if cfg.scenario == "logs":
        p = cfg.logs.path
        if is_local_path(p) and not Path(p.removeprefix("file://")).exists():
            raise ConfigError(
                "logs.path", f"{p} does not exist (a serving log folder or a folder of feedback-log files)"
            )
    elif cfg.scenario == "obd":
        from lmrec.data.open_bandit import obd_dir

        base = obd_dir(cfg.obd.data_dir) / cfg.obd.behavior / cfg.obd.campaign
        for f in (base / "all.csv", base / "item_context.csv"):
            if not f.is_file():
                raise ConfigError(
                    "obd.data_dir",
                    f"Open Bandit file {f} not found (set obd.data_dir or LMREC_DATA_DIR "
                    "to the folder holding open_bandit/)",
                )
    else:
        rc = cfg.replay
        if rc.model_uri and not rc.model_uri.startswith(("models:/", "runs:/")) and not Path(rc.model_uri).exists():
            raise ConfigError(
                "replay.model_uri", f"{rc.model_uri} is neither a models:/ or runs:/ URI nor an existing folder"
            )
        if rc.dataset != "synthetic":
            from lmrec.data.download import locate_dataset
            from lmrec.data.readers import dataset_spec
            from lmrec.paths import data_dir as resolve

            try:
                spec = dataset_spec(rc.dataset)
            except (KeyError, ValueError) as exc:
                raise ConfigError("replay.dataset", str(exc)) from exc
            try:
                locate_dataset(spec, resolve(rc.data_dir), download=False)
            except Exception as exc:
                raise ConfigError("replay.data_dir", str(exc)) from exc


def baseline_points(space: SearchSpace) -> list[dict[str, Any]]:
    """Greedy and epsilon = 0.1 as the first trials, when the space contains them."""
    points: list[dict[str, Any]] = []
    if "greedy" in space.policies:
        points.append({"policy": "greedy"})
    if "epsilon_greedy" in space.policies and space.epsilon[0] <= 0.1 <= space.epsilon[1]:
        points.append({"policy": "epsilon_greedy", "epsilon": 0.1})
    return points


def exploration_trial(params: dict[str, Any], scenario: Scenario, penalty: float, seed: int = 0) -> None:
    """The Tune trial: build the policy and forward the objective's reports."""
    from ray import tune

    config = policy_config(params, scenario.base_policy)
    evaluate(scenario, config, penalty, report=lambda m: tune.report(dict(m)), seed=seed)


@dataclass
class SearchResult:
    """What a search produced: best config, every trial, the comparison and where it is tracked."""

    parent_run_id: str
    best: PolicyConfig
    best_metrics: dict[str, float]
    trials: list[dict[str, Any]]
    comparison: dict[str, dict[str, float]]
    scenario_info: dict[str, Any]
    model_version: str | None
    policy_uri: str
    seconds: float
    files: dict[str, str] = Field(default_factory=dict)
    selection: list[dict[str, Any]] = Field(default_factory=list)  # finalists on the validation period (if any)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent_run_id": self.parent_run_id,
            "best": self.best.to_dict(),
            "best_metrics": self.best_metrics,
            "trials": self.trials,
            "comparison": self.comparison,
            "scenario": self.scenario_info,
            "model_version": self.model_version,
            "policy_uri": self.policy_uri,
            "seconds": round(self.seconds, 1),
            "files": self.files,
            "selection": self.selection,
        }

    def table(self) -> str:
        """Comparison of the tuned policy with the baselines, as plain text."""
        lines = [f"{'policy':<36} {'estimate':>10} {'std_err':>9} {'objective':>10}"]
        for name, m in self.comparison.items():
            lines.append(
                f"{name:<36} {m.get('estimate', float('nan')):>10.5f} {m.get('std_err', m.get('reward_se', float('nan'))):>9.5f} {m.get('objective', float('nan')):>10.5f}"
            )
        return "\n".join(lines)


def _trial_rows(grid: Any) -> list[dict[str, Any]]:
    rows = []
    for r in grid:
        if r.error is not None or not r.metrics:
            rows.append({"params": dict(r.config or {}), "error": str(r.error)[:500] if r.error else "no metrics"})
            continue
        keep = {k: float(v) for k, v in r.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        rows.append({"params": dict(r.config), "metrics": keep, "path": str(r.path)})
    return rows


def pick_best(trials: list[dict[str, Any]], scenario: Scenario) -> dict[str, Any]:
    """Best objective among trials that saw every step (ASHA-stopped trials saw a prefix only)."""
    done = [t for t in trials if "metrics" in t]
    if not done:
        raise RuntimeError(f"no trial finished: {[t.get('error') for t in trials][:3]}")
    if isinstance(scenario, ReplayScenario):
        full = [t for t in done if t["metrics"].get("events", 0) >= len(scenario.tune)]
        done = full or done
    return max(done, key=lambda t: t["metrics"][METRIC])


DETERMINISTIC_POLICIES = ("greedy", "ucb")  # one replay run suffices: no seed changes their slates


def replay_runs(
    scenario: ReplayScenario,
    pc: PolicyConfig,
    period: str,
    penalty: float,
    repeats: int = 5,
    seed: int = 0,
) -> tuple[dict[str, Any], np.ndarray]:
    """Replay `pc` on `period` with seeds seed, seed+1, ... (once if deterministic), each from empty state.

    Returns the summary (estimate = mean clicks/event over seeds, `seed_std`, `per_seed`)
    and the per-event clicks averaged over seeds (for paired comparisons on the same events).
    """
    from lmrec.exploration.policies import build_policy
    from lmrec.exploration.replay import run_replay

    events = scenario.events(period)  # type: ignore[arg-type]
    n = 1 if pc.type in DETERMINISTIC_POLICIES else repeats
    runs = [run_replay(events, build_policy(pc.replace(seed=seed + r)), scenario.slate_size) for r in range(n)]
    vals = np.array([r.rewards.mean() for r in runs])
    first = replay_metrics(runs[0].summary(), penalty)
    out: dict[str, Any] = {
        **first,
        "estimate": float(vals.mean()),
        "seed_std": float(vals.std(ddof=1)) if n > 1 else 0.0,
        "repeats": float(n),
        "cum_reward": float(np.mean([r.rewards.sum() for r in runs])),
        "cum_regret": float(np.mean([(r.oracle - r.rewards).sum() for r in runs])),
        "per_seed": vals.tolist(),
        "seeds": [seed + r for r in range(n)],
    }
    out["objective"] = out["estimate"] - penalty * out["reward_se"]
    return out, np.mean([r.rewards for r in runs], axis=0)


def compare_policies(
    scenario: Scenario, best: PolicyConfig, penalty: float, repeats: int = 5, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Tuned vs greedy vs epsilon=0.1: on held-out events (replay) or on the logged data.

    On replay every policy also gets its paired difference to greedy on the same events:
    `diff_vs_greedy` (clicks/event), `diff_vs_greedy_se` (standard error over events of the
    per-event difference, seed-averaged) and `seeds_above_greedy` (how many seeds beat it).
    """
    base = scenario.base_policy
    candidates = {
        f"tuned ({_label(best)})": best,
        "greedy": policy_config({"policy": "greedy"}, base),
        "epsilon_greedy (epsilon=0.1)": policy_config({"policy": "epsilon_greedy", "epsilon": 0.1}, base),
    }
    out: dict[str, dict[str, Any]] = {}
    if isinstance(scenario, ReplayScenario):
        per_event: dict[str, np.ndarray] = {}
        for name, pc in candidates.items():
            out[name], per_event[name] = replay_runs(scenario, pc, "heldout", penalty, repeats, seed)
        g, g_val = per_event["greedy"], out["greedy"]["estimate"]
        for name, m in out.items():
            d = per_event[name] - g
            m["diff_vs_greedy"] = float(d.mean())
            m["diff_vs_greedy_se"] = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
            m["seeds_above_greedy"] = float(sum(v > g_val for v in m["per_seed"]))
        return out
    for name, pc in candidates.items():
        out[name] = evaluate(scenario, pc, penalty, seed=seed)
    return out


def select_on_validation(
    trials: list[dict[str, Any]],
    scenario: ReplayScenario,
    penalty: float,
    finalists: int = 5,
    repeats: int = 5,
    seed: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The search's top `finalists` distinct configurations, re-run on the validation period.

    Finalists are the trials that replayed every tune event (ASHA-stopped trials saw a
    prefix only), best search objective first, one per distinct policy configuration.
    Each is replayed on the validation events (`repeats` seeds if stochastic, from empty
    state); the one with the best validation objective is returned with every row.
    """
    done = [t for t in trials if "metrics" in t]
    full = [t for t in done if t["metrics"].get("events", 0) >= len(scenario.tune)] or done
    if not full:
        raise RuntimeError(f"no trial finished: {[t.get('error') for t in trials][:3]}")
    ranked = sorted(full, key=lambda t: -t["metrics"][METRIC])  # stable: the earlier trial wins a tie
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for t in ranked:
        pc = policy_config(t["params"], scenario.base_policy)
        key = json.dumps(pc.to_dict(), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        valid, _ = replay_runs(scenario, pc, "valid", penalty, repeats, seed)
        rows.append(
            {
                "params": t["params"],
                "policy": _label(pc),
                "search_objective": t["metrics"][METRIC],
                "search_estimate": t["metrics"].get("estimate"),
                "valid": valid,
                "trial": t,
            }
        )
        if len(rows) == finalists:
            break
    chosen = max(rows, key=lambda r: r["valid"]["objective"])  # first maximum: the better search rank wins a tie
    for r in rows:
        r["chosen"] = r is chosen
    return chosen["trial"], [{k: v for k, v in r.items() if k != "trial"} for r in rows]


def _label(pc: PolicyConfig) -> str:
    extra = {
        "epsilon_greedy": f"epsilon={pc.epsilon:.3g}",
        "softmax": f"temperature={pc.temperature:.3g}",
        "ucb": f"c={pc.ucb_c:.3g}, w={pc.prior_strength:.3g}, {pc.feedback}",
        "thompson": f"w={pc.prior_strength:.3g}, {pc.feedback}",
    }.get(pc.type, "")
    return f"{pc.type}{', ' + extra if extra else ''}"


def selection_table(selection: list[dict[str, Any]]) -> str:
    """The validation stage as plain text: search objective, validation mean and seed std per finalist."""
    lines = [f"{'finalist':<44} {'search obj':>10} {'valid':>8} {'seed std':>8} {'valid obj':>9}"]
    for r in selection:
        v = r["valid"]
        lines.append(
            f"{('* ' if r['chosen'] else '  ') + r['policy']:<44} {r['search_objective']:>10.4f} "
            f"{v['estimate']:>8.4f} {v['seed_std']:>8.4f} {v['objective']:>9.4f}"
        )
    return "\n".join(lines)


def replay_curves_png(
    scenario: ReplayScenario, configs: dict[str, PolicyConfig], path: Path, logger: Any = None
) -> Path:
    """Held-out cumulative clicks and regret of each policy as a PNG; with `logger` (a RunLogger)
    also as metric histories `heldout/<name>/cum_reward|cum_regret`, a point every `report_every` events."""
    from lmrec.exploration.policies import build_policy
    from lmrec.exploration.replay import plot_curves, run_replay

    results = {
        name: run_replay(scenario.heldout, build_policy(pc), scenario.slate_size) for name, pc in configs.items()
    }
    if logger is not None and results:
        n = len(next(iter(results.values())).rewards)
        steps = sorted({*range(scenario.report_every, n + 1, scenario.report_every), n})
        idx = np.asarray(steps) - 1
        series: dict[str, list[float]] = {}
        for name, res in results.items():
            key = name.replace("=", "_")
            series[f"heldout/{key}/cum_reward"] = res.cum_reward[idx].tolist()
            series[f"heldout/{key}/cum_regret"] = res.cum_regret[idx].tolist()
        logger.history(series, steps)
    return plot_curves(results, path, title="held-out replay")


def run_exploration_search(cfg: TuneExplorationConfig) -> SearchResult:
    """The whole search job (what `jobs/tune_exploration.py` runs)."""
    t0 = time.time()
    preflight(cfg)  # missing inputs fail here, naming the key, before Ray is imported or started
    from ray import tune

    from lmrec.paths import default_storage_path
    from lmrec.tracking import mlflow_utils as mt
    from lmrec.training.trainer import ensure_ray

    sc, tr = cfg.search, cfg.tracking
    ensure_ray()
    scenario = prepare_scenario(cfg)
    uri = mt.resolve_tracking_uri(tr.tracking_uri)
    mt.ensure_experiment(tr.experiment, uri)
    name = sc.name or f"explore-{cfg.scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp_path = Path(sc.storage_path or str(default_storage_path())) / name
    marker = exp_path / "lmrec_search.json"  # the MLflow search run of this Tune experiment
    resuming = sc.resume and marker.exists() and tune.Tuner.can_restore(str(exp_path))
    unused = {"obd", "logs", "replay"} - {cfg.scenario}  # other scenarios' sections are noise in the params
    params = {k: v for k, v in flatten(to_dict(cfg)).items() if k.split(".")[0] not in unused}
    if resuming:
        parent = json.loads(marker.read_text())["search_run_id"]
        print(f"[lmrec.explore] resuming Tune experiment {exp_path} (MLflow search run {parent})", flush=True)
    else:
        parent = mt.start_run(
            tr.experiment,
            tr.run_name or name,
            params,
            {"lmrec.kind": "exploration_search", "lmrec.scenario": cfg.scenario, "lmrec.tune_name": name},
            parent_run_id=tr.parent_run_id,
            uri=uri,
        )
        exp_path.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"search_run_id": parent, "tracking_uri": uri}))
    logger = mt.RunLogger(parent, uri)
    try:
        result = _search_and_record(cfg, scenario, parent, logger, name, exp_path, resuming, uri, t0)
    except Exception:
        logger.end("FAILED")  # an interrupt (KeyboardInterrupt, SIGTERM) leaves it RUNNING: resumable
        raise
    return result


def _search_and_record(
    cfg: TuneExplorationConfig,
    scenario: Scenario,
    parent: str,
    logger: Any,
    name: str,
    exp_path: Path,
    resuming: bool,
    uri: str,
    t0: float,
) -> SearchResult:
    """The search proper, once its MLflow run exists: Tune, selection, comparison, artifacts, registry."""
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from lmrec.exploration.artifacts import POLICY_ARTIFACT_DIR, save_policy_artifact
    from lmrec.tracking import mlflow_utils as mt

    sc, tr = cfg.search, cfg.tracking
    stateful = not isinstance(scenario, LoggedScenario) or scenario.stateful
    space = define_space(cfg.space, stateful)
    if not stateful and "ucb" in cfg.space.policies and "ucb" not in space.policies():
        scenario.info["search_space_note"] = (
            "UCB left out: with no item statistics (warm_start_frac = 0) it ranks as "
            "greedy does; Thompson's feedback setting has no effect either"
        )
        print(f"[lmrec.explore] {scenario.info['search_space_note']}", flush=True)
    logger.json(scenario.info, "scenario.json")
    print(f"[lmrec.explore] scenario {cfg.scenario}: {json.dumps(scenario.info, default=str)[:400]}", flush=True)
    print(f"[lmrec.explore] MLflow search run {parent} at {uri}", flush=True)

    use_asha = scenario.has_steps and sc.scheduler in ("auto", "asha")
    if sc.scheduler == "asha" and not scenario.has_steps:
        print(
            "[lmrec.explore] scenario reports one value per trial: ASHA has nothing to stop early, using FIFO",
            flush=True,
        )
    scheduler = (
        ASHAScheduler(
            time_attr="training_iteration",
            max_t=scenario.num_reports,
            grace_period=min(sc.grace_period, scenario.num_reports),  # type: ignore[union-attr]
            reduction_factor=sc.reduction_factor,
        )
        if use_asha
        else FIFOScheduler()
    )
    searcher = OptunaSearch(
        space=space,
        metric=METRIC,
        mode="max",
        points_to_evaluate=baseline_points(cfg.space) if sc.include_baselines else None,
        sampler=_tpe_sampler(sc.seed),
    )
    trainable = tune.with_resources(
        tune.with_parameters(exploration_trial, scenario=scenario, penalty=sc.variance_penalty, seed=sc.seed),
        {"cpu": sc.cpus_per_trial},
    )
    callback = MLflowLoggerCallback(
        tracking_uri=uri,
        experiment_name=tr.experiment,
        tags={"mlflow.parentRunId": parent, "lmrec.kind": "exploration_trial", "lmrec.search_run_id": parent},
    )
    if resuming:  # searcher, scheduler and callbacks come back from the experiment's own state
        tuner = tune.Tuner.restore(str(exp_path), trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="max",
                search_alg=ConcurrencyLimiter(searcher, sc.max_concurrent),
                scheduler=scheduler,
                num_samples=sc.num_samples,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(name=name, storage_path=str(exp_path.parent), callbacks=[callback], verbose=1),
        )
    selection: list[dict[str, Any]] = []
    grid = tuner.fit()
    trials = _trial_rows(grid)
    best_row = pick_best(trials, scenario)
    if isinstance(scenario, ReplayScenario) and scenario.valid is not None:
        best_row, selection = select_on_validation(
            trials, scenario, sc.variance_penalty, sc.finalists, sc.valid_repeats, sc.seed
        )
        print("[lmrec.explore] validation (finalists of the search):\n" + selection_table(selection), flush=True)
    best = policy_config(best_row["params"], scenario.base_policy)
    comparison = compare_policies(scenario, best, sc.variance_penalty, sc.eval_repeats, sc.seed)
    metadata = {
        "scenario": cfg.scenario,
        "objective": best_row["metrics"][METRIC],
        "search_run_id": parent,
        "tune_name": name,
        "metrics": best_row["metrics"],
        "comparison": comparison,
        "scenario_info": scenario.info,
    }
    if selection:
        metadata["selection"] = "best validation objective among the search's finalists"
        metadata["valid_metrics"] = next(r["valid"] for r in selection if r["chosen"])
        logger.json(selection, "selection.json")
    artifact = save_policy_artifact(parent, best, metadata, uri)
    logger.json(comparison, "comparison.json")
    logger.json(trials, "trials.json")
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="lmrec-explore-") as tmp:
        if isinstance(scenario, ReplayScenario):
            png = replay_curves_png(
                scenario,
                {
                    "tuned": best,
                    "greedy": policy_config({"policy": "greedy"}, scenario.base_policy),
                    "epsilon=0.1": policy_config({"policy": "epsilon_greedy", "epsilon": 0.1}, scenario.base_policy),
                },
                Path(tmp) / "replay_heldout.png",
                logger,
            )
            logger.artifact(png)
            files["curves_png"] = "replay_heldout.png"
    metrics = {f"best/{k}": v for k, v in best_row["metrics"].items()}
    if selection:
        metrics.update({f"valid/{k}": v for k, v in metadata["valid_metrics"].items() if isinstance(v, float)})
    for i, (_nm, m) in enumerate(comparison.items()):
        key = ["tuned", "greedy", "epsilon_0.1"][i]
        metrics.update({f"compare/{key}/{k}": v for k, v in m.items() if isinstance(v, float)})
    logger.metrics(metrics)
    tags = {
        "lmrec.best_policy": best.type,
        "lmrec.best_policy_json": json.dumps(best.to_dict(), sort_keys=True)[:4900],
        "lmrec.policy_artifact": artifact,
        "lmrec.trials": len(trials),
    }
    version = None
    if tr.register:
        version = mt.register_model(
            parent,
            tr.model_name,
            alias=tr.alias,
            artifact_path=POLICY_ARTIFACT_DIR,
            tags={"kind": "exploration_policy", "policy": best.type, "scenario": cfg.scenario},
            uri=uri,
            model_description="lmrec exploration policy (policy.json: config + item statistics)",
        )
        tags["lmrec.policy_version"] = version
        tags["lmrec.policy_alias"] = tr.alias  # only when the alias exists
    logger.tags(tags)
    logger.end("FINISHED")
    policy_uri = f"models:/{tr.model_name}@{tr.alias}" if version else f"runs:/{parent}/{POLICY_ARTIFACT_DIR}"
    result = SearchResult(
        parent,
        best,
        best_row["metrics"],
        trials,
        comparison,
        scenario.info,
        version,
        policy_uri,
        time.time() - t0,
        files,
        selection,
    )
    if cfg.out:
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=1, default=str))
        from lmrec.exploration.artifacts import policy_document

        (out.with_name(out.stem + "_policy.json")).write_text(
            json.dumps(policy_document(best, metadata), indent=1, default=str)
        )
        result.files["summary"] = str(out)
    return result


def _tpe_sampler(seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def replay_benchmark(cfg: TuneExplorationConfig, tuned: PolicyConfig, repeats: int = 5) -> dict[str, Any]:
    """Tuned policy vs greedy vs epsilon = 0.1 on the held-out replay period of `cfg.replay`."""
    from lmrec.training.trainer import ensure_ray

    if cfg.replay.scorer == "seqrec" and not cfg.replay.model_uri:
        ensure_ray()  # a cache miss prepares the model's training data with Ray Data
    scenario = prepare_replay(cfg.replay)
    calib = {k: scenario.base_policy[k] for k in ("score_scale", "score_shift")}
    if any(abs(getattr(tuned, k) - v) > 1e-9 for k, v in calib.items()):
        print(f"[lmrec.explore] note: the tuned policy's calibration differs from this scenario's {calib}", flush=True)
    comparison = compare_policies(scenario, tuned, cfg.search.variance_penalty, repeats, cfg.search.seed)
    return {"comparison": comparison, "scenario": scenario.info, "tuned": tuned.to_dict()}
