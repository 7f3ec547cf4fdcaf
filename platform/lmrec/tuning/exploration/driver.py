"""The exploration search job: preflight -> scenario -> MLflow search run -> Tuner(Optuna [+ ASHA])
-> best (or validated) config -> comparison with greedy and epsilon = 0.1 -> policy.json
artifact, tags and (optionally) a registered version with an alias.

The objective of a trial is `lmrec.exploration.objectives.evaluate`; `exploration_trial`
only forwards its reports (Tune runs it by reference: it stays a top-level function here).
Ray is imported inside functions, so loading and validating a config never touches Ray.

API facts used (Ray 2.60, read from the installed source): `ray.tune.Tuner`,
`ray.tune.Tuner.restore(path, trainable, resume_errored=True)`, `ray.tune.TuneConfig(search_alg=...,
scheduler=..., num_samples=...)`, `ray.tune.RunConfig(callbacks=[MLflowLoggerCallback])`,
`ray.tune.schedulers.ASHAScheduler(max_t, grace_period, reduction_factor)`, `ray.tune.report(metrics)`.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from lmrec.config import flatten, to_dict
from lmrec.exploration.objectives import LoggedScenario, ReplayScenario, Scenario, evaluate, policy_config
from lmrec.exploration.policies import PolicyConfig
from lmrec.tuning.exploration.config import METRIC, TuneExplorationConfig
from lmrec.tuning.exploration.report import SearchResult, replay_curves_png, selection_table
from lmrec.tuning.exploration.scenarios import prepare_replay, prepare_scenario
from lmrec.tuning.exploration.selection import compare_policies, pick_best, select_on_validation
from lmrec.tuning.exploration.space import baseline_points, define_space
from lmrec.tuning.search import (
    experiment_path,
    optuna_searcher,
    start_search_run,
    tracking_uri,
    trial_callback,
    trial_records,
    write_summary,
)


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


def exploration_trial(params: dict[str, Any], scenario: Scenario, penalty: float, seed: int = 0) -> None:
    """The Tune trial: build the policy and forward the objective's reports."""
    from ray import tune

    config = policy_config(params, scenario.base_policy)
    evaluate(scenario, config, penalty, report=lambda m: tune.report(dict(m)), seed=seed)


def trial_rows(grid: Any) -> list[dict[str, Any]]:
    """One row per trial: params and numeric metrics, or params and why it failed."""
    rows = []
    for t in trial_records(grid):
        if t.error is not None or not t.metrics:
            rows.append({"params": t.params, "error": t.error or "no metrics"})
        else:
            metrics = {k: float(v) for k, v in t.numbers().items()}
            rows.append({"params": t.params, "metrics": metrics, "path": t.path})
    return rows


def run_exploration_search(cfg: TuneExplorationConfig) -> SearchResult:
    """The whole search job (what `jobs/tune_exploration.py` runs)."""
    t0 = time.time()
    preflight(cfg)  # missing inputs fail here, naming the key, before Ray is imported or started
    from ray import tune

    from lmrec.tracking import mlflow_utils as mt
    from lmrec.training.trainer import ensure_ray

    sc, tr = cfg.search, cfg.tracking
    ensure_ray()
    scenario = prepare_scenario(cfg)
    uri = tracking_uri(tr)
    exp_path = experiment_path(sc.name, f"explore-{cfg.scenario}", sc.storage_path)
    name = exp_path.name
    marker = exp_path / "lmrec_search.json"  # the MLflow search run of this Tune experiment
    resuming = sc.resume and marker.exists() and tune.Tuner.can_restore(str(exp_path))
    unused = {"obd", "logs", "replay"} - {cfg.scenario}  # other scenarios' sections are noise in the params
    params = {k: v for k, v in flatten(to_dict(cfg)).items() if k.split(".")[0] not in unused}
    if resuming:
        parent = json.loads(marker.read_text())["search_run_id"]
        print(f"[lmrec.explore] resuming Tune experiment {exp_path} (MLflow search run {parent})", flush=True)
    else:
        tags = {"lmrec.kind": "exploration_search", "lmrec.scenario": cfg.scenario, "lmrec.tune_name": name}
        parent = start_search_run(tr, name, params, tags, uri)
        exp_path.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"search_run_id": parent, "tracking_uri": uri}))
    logger = mt.RunLogger(parent, uri)
    try:
        result = _search_and_record(cfg, scenario, parent, logger, exp_path, resuming, uri, t0)
    except Exception:
        logger.end("FAILED")  # an interrupt (KeyboardInterrupt, SIGTERM) leaves it RUNNING: resumable
        raise
    return result


def _tuner(
    cfg: TuneExplorationConfig, scenario: Scenario, parent: str, exp_path: Path, resuming: bool, uri: str
) -> Any:
    """The Tuner of a new search, or the interrupted one restored from `exp_path`."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sc = cfg.search
    stateful = not isinstance(scenario, LoggedScenario) or scenario.stateful
    trainable = tune.with_resources(
        tune.with_parameters(exploration_trial, scenario=scenario, penalty=sc.variance_penalty, seed=sc.seed),
        {"cpu": sc.cpus_per_trial},
    )
    if resuming:  # searcher, scheduler and callbacks come back from the experiment's own state
        return tune.Tuner.restore(str(exp_path), trainable, resume_errored=True)
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
    points = baseline_points(cfg.space) if sc.include_baselines else None
    searcher = optuna_searcher(define_space(cfg.space, stateful), METRIC, "max", sc.seed, sc.max_concurrent, points)
    callback = trial_callback(uri, cfg.tracking.experiment, parent, "exploration_trial")
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=sc.num_samples,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=exp_path.name, storage_path=str(exp_path.parent), callbacks=[callback], verbose=1
        ),
    )


def _search_and_record(
    cfg: TuneExplorationConfig,
    scenario: Scenario,
    parent: str,
    logger: Any,
    exp_path: Path,
    resuming: bool,
    uri: str,
    t0: float,
) -> SearchResult:
    """The search proper, once its MLflow run exists: Tune, selection, comparison, artifacts, registry."""
    from lmrec.exploration.artifacts import POLICY_ARTIFACT_DIR, save_policy_artifact
    from lmrec.tracking import mlflow_utils as mt

    sc, tr = cfg.search, cfg.tracking
    stateful = not isinstance(scenario, LoggedScenario) or scenario.stateful
    if not stateful and "ucb" in cfg.space.policies and "ucb" not in define_space(cfg.space, stateful).policies():
        scenario.info["search_space_note"] = (
            "UCB left out: with no item statistics (warm_start_frac = 0) it ranks as "
            "greedy does; Thompson's feedback setting has no effect either"
        )
        print(f"[lmrec.explore] {scenario.info['search_space_note']}", flush=True)
    logger.json(scenario.info, "scenario.json")
    print(f"[lmrec.explore] scenario {cfg.scenario}: {json.dumps(scenario.info, default=str)[:400]}", flush=True)
    print(f"[lmrec.explore] MLflow search run {parent} at {uri}", flush=True)

    selection: list[dict[str, Any]] = []
    grid = _tuner(cfg, scenario, parent, exp_path, resuming, uri).fit()
    trials = trial_rows(grid)
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
        "tune_name": exp_path.name,
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
        out = write_summary(cfg.out, result.to_dict())
        from lmrec.exploration.artifacts import policy_document

        (out.with_name(out.stem + "_policy.json")).write_text(
            json.dumps(policy_document(best, metadata), indent=1, default=str)
        )
        result.files["summary"] = str(out)
    return result


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
