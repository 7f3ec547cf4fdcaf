"""The training search job: config and encoder checked -> dataset prepared, item text embedded ->
MLflow search run -> Tuner(Optuna TPE + ASHA on validation NDCG@10) -> best trial by validation,
its test metrics, its model logged (and registered with `tracking.register`).

Each trial runs the standard training loop (`lmrec.training.loop.run_training`) in its own
process, one report per validated epoch; MLflowLoggerCallback nests every trial's run under the
search run. The best trial is chosen by validation NDCG@10 (its last validation, the epoch the
loop restored and tested), never by test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lmrec.config import flatten, to_dict
from lmrec.tuning.search import (
    experiment_path,
    optuna_searcher,
    run_for_trial,
    start_search_run,
    tracking_uri,
    trial_callback,
    trial_records,
    trial_run_ids,
    write_summary,
)
from lmrec.tuning.training.config import NDCG_KEY, TuneTrainConfig
from lmrec.tuning.training.space import DefineTrainSpace
from lmrec.tuning.training.trial import export_dir, train_trial

TEST_KEY = "test/full/ndcg_at_10"


@dataclass
class TrainSearchResult:
    parent_run_id: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    seconds: float
    model_version: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the job's and the CLI's output."""
        best = self.best or {}
        return (
            f"search run {self.parent_run_id}: {len(self.trials)} trials, best {best.get('trial_id')} "
            f"(valid NDCG@10 {best.get(NDCG_KEY)}, test {best.get(TEST_KEY)}), "
            f"model version {self.model_version}, {self.seconds:.0f}s"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent_run_id": self.parent_run_id,
            "trials": self.trials,
            "best": self.best,
            "seconds": self.seconds,
            "model_version": self.model_version,
        }


def run_train_search(cfg: TuneTrainConfig) -> TrainSearchResult:
    """The whole search (what `jobs/tune_train.py` and `lmrec tune-train` run)."""
    from lmrec.data.prepare import prepare_dataset
    from lmrec.tracking import mlflow_utils as mt
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.trainer import check_content_encoder, ensure_ray, text_embeddings

    t0 = time.time()
    base = TrainJobConfig(data=cfg.data, model=cfg.model, train=cfg.train, eval=cfg.eval)
    check_content_encoder(base)  # an encoder that cannot load fails before Ray starts
    ensure_ray()
    prepared = prepare_dataset(cfg.data)
    base.prepared_path = str(prepared.path)
    text_embeddings(base, prepared)  # once for all trials (cached)
    tr = cfg.tracking
    uri = tracking_uri(tr)
    exp_path = experiment_path(cfg.search.name, f"train-{cfg.data.dataset.replace(':', '-')}", cfg.search.storage_path)
    tags = {
        "lmrec.kind": "train_search",
        "lmrec.dataset": prepared.manifest["dataset"],
        "lmrec.tune_name": exp_path.name,
    }
    parent = start_search_run(tr, exp_path.name, flatten(to_dict(cfg)), tags, uri)
    logger = mt.RunLogger(parent, uri)
    print(f"[lmrec.tune-train] MLflow search run {parent} at {uri}", flush=True)
    job = {
        "cfg": to_dict(cfg),
        "prepared_path": base.prepared_path,
        "text_embeddings_path": base.text_embeddings_path,
        "tracking_uri": uri,
        "threads": cfg.search.cpus_per_trial,
    }
    try:
        grid = _tuner(cfg, job, parent, uri, exp_path.name, str(exp_path.parent)).fit()
    except Exception:
        logger.end("FAILED")
        raise
    trials = _rows(grid)
    done = [t for t in trials if t.get(NDCG_KEY) is not None and t.get(TEST_KEY) is not None]
    best = max(done, key=lambda t: t[NDCG_KEY]) if done else None
    version = None
    if best is not None:
        runs = trial_run_ids(parent, tr.experiment, uri)
        best["run_id"] = run_for_trial(best["trial_id"], runs)
        exported = export_dir(best["checkpoint"]) if best.get("checkpoint") else None
        if exported is not None and best["run_id"]:
            mt.RunLogger(best["run_id"], uri).artifacts(exported, mt.MODEL_ARTIFACT_PATH)
            if tr.register:
                version = mt.register_model(
                    best["run_id"],
                    tr.model_name,
                    alias=tr.alias,
                    tags={"kind": "trained", "dataset": prepared.manifest["dataset"], "search_run_id": parent},
                    uri=uri,
                )
        logger.metrics({"best/" + k: v for k, v in best.items() if k.startswith(("valid/", "test/"))})
        logger.tags({"lmrec.best_trial": best["trial_id"]})
    logger.json({"trials": trials, "best": best}, "search.json")
    logger.metrics({"trials": len(trials), "trials_completed": len(done)})
    logger.end("FINISHED")
    result = TrainSearchResult(parent, trials, best, time.time() - t0, version)
    _print(result)
    if cfg.out:
        result.files["summary"] = str(write_summary(cfg.out, result.to_dict()))
    return result


def _tuner(cfg: TuneTrainConfig, job: dict[str, Any], parent: str, uri: str, name: str, storage: str) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    sc = cfg.search
    reports = cfg.train.epochs // cfg.eval.every_epochs + 2  # validated epochs (+ the last) + the final report
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        metric=NDCG_KEY,
        mode="max",
        max_t=reports,
        grace_period=min(sc.grace_period, reports),
        reduction_factor=sc.reduction_factor,
    )
    searcher = optuna_searcher(
        DefineTrainSpace(cfg.space), NDCG_KEY, "max", sc.seed, sc.max_concurrent, list(sc.points_to_evaluate)
    )
    trainable = tune.with_resources(tune.with_parameters(train_trial, job=job), {"cpu": sc.cpus_per_trial})
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=sc.num_samples),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[trial_callback(uri, cfg.tracking.experiment, parent, "train_trial")],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            verbose=1,
        ),
    )


def _rows(grid: Any) -> list[dict[str, Any]]:
    """One row per trial: its point, last validation and (if it finished) test metrics, status."""
    checkpoints = {str(r.path): (r.checkpoint.path if r.checkpoint is not None else None) for r in grid}
    rows = []
    for t in trial_records(grid):
        m = t.metrics
        rows.append(
            {
                "trial_id": t.trial_id,
                "params": t.params,
                NDCG_KEY: m.get(NDCG_KEY),
                TEST_KEY: m.get(TEST_KEY),
                "test/full/hr_at_10": m.get("test/full/hr_at_10"),
                "epochs_completed": m.get("epochs_completed"),
                "iterations": m.get("training_iteration"),
                "status": "error" if t.error else ("finished" if m.get("final") else "stopped"),
                "error": t.error,
                "checkpoint": checkpoints.get(t.path),
            }
        )
    return rows


def _print(result: TrainSearchResult) -> None:
    print(f"[lmrec.tune-train] {len(result.trials)} trials in {result.seconds:.0f}s", flush=True)
    for t in sorted(result.trials, key=lambda t: -(t.get(NDCG_KEY) or -1)):
        valid, test = t.get(NDCG_KEY), t.get(TEST_KEY)
        print(
            f"  {t['trial_id']} {t['status']:<8} valid NDCG@10 {valid if valid is None else round(valid, 4)} "
            f"test {test if test is None else round(test, 4)} {t['params']}",
            flush=True,
        )
    if result.best:
        print(f"[lmrec.tune-train] best by validation: {result.best['trial_id']}", flush=True)
