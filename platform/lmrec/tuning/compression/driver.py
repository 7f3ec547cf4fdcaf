"""The compression search job: teacher and dataset checked -> MLflow search run ->
Tuner(Optuna multi-objective + ASHA) -> Pareto front -> table, PNG and registered versions.

A trial that trains (a distilled student, or a pruned teacher with a recovery fine-tune)
drives a Ray Train run (`trial`). Latency and size depend only on the architecture, so a
trial measures them before training and every report carries them (Optuna's
multi-objective tell needs all objectives, also for trials ASHA stops early). The Pareto
front (max validation NDCG@10, min p50 latency per batch size, min bytes) goes to the
search run as a table and a PNG, and its models are registered as versions of
`lmrec-seqrec` with compression tags.

API facts used (Ray 2.60, read from the installed source): with a list metric OptunaSearch
ignores intermediate results and tells Optuna the last one. `ASHAScheduler(metric, mode)`
has its own metric, so `TuneConfig` gets none. `MLflowLoggerCallback` logs every reported
number, so metric keys must be MLflow-safe (no '@': reports are renamed `ndcg@10` -> `ndcg_at_10`).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmrec.compression.spec import CompressionSpec
from lmrec.config import flatten, to_dict
from lmrec.tuning.compression.config import NDCG_KEY, SIZE_KEY, TuneCompressionConfig, latency_key
from lmrec.tuning.compression.front import (
    CompressionSearchResult,
    front_png,
    front_table,
    pareto_front,
    trial_rows,
)
from lmrec.tuning.compression.space import DefineCompressionSpace
from lmrec.tuning.compression.trial import compression_trial
from lmrec.tuning.search import (
    experiment_path,
    optuna_searcher,
    run_for_trial,
    start_search_run,
    tracking_uri,
    trial_callback,
    trial_run_ids,
    write_summary,
)


@dataclass
class Inputs:
    """The checked inputs every trial reads."""

    teacher_dir: str  # local folder holding the teacher artifact
    teacher_info: dict[str, Any]
    prepared_path: str
    num_items: int


def resolve_teacher(uri: str, tracking_uri: str | None) -> tuple[Path, dict[str, Any]]:
    """Local folder of the teacher artifact; a clear ValueError when the version does not exist."""
    from lmrec.tracking import mlflow_utils as mt

    if uri.startswith("models:/"):
        try:
            info = mt.resolve_model_version(uri, tracking_uri)
        except Exception as exc:  # MlflowException: RESOURCE_DOES_NOT_EXIST
            raise ValueError(
                f"teacher {uri}: no such registered model version ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]})"
            ) from exc
        return mt.download_model(info["source"], uri=tracking_uri), info
    if uri.startswith("runs:/"):
        return mt.download_model(uri, uri=tracking_uri), {"source": uri}
    path = Path(uri)
    if not path.is_dir():
        raise ValueError(f"teacher {uri}: not a model URI (models:/..., runs:/...) nor an existing folder")
    return path, {"source": str(path)}


def check_inputs(cfg: TuneCompressionConfig) -> Inputs:
    """Resolve the teacher and the dataset and check they match; raises before any trial exists."""
    from lmrec.compression.distill import check_teacher_catalog
    from lmrec.data.prepare import prepare_dataset
    from lmrec.models.artifacts import CONFIG, VOCAB, check_safe
    from lmrec.models.config import SeqRecConfig

    teacher_dir, info = resolve_teacher(cfg.teacher, cfg.tracking.tracking_uri)
    check_safe(teacher_dir)
    tcfg = SeqRecConfig.from_dict(json.loads((teacher_dir / CONFIG).read_text()))
    vocab = json.loads((teacher_dir / VOCAB).read_text())["item_ids"]
    prepared = prepare_dataset(cfg.data)
    try:
        check_teacher_catalog(tcfg.num_items, prepared.num_items, vocab, prepared.manifest["item_ids"])
    except ValueError as exc:
        raise ValueError(f"teacher {cfg.teacher} does not fit dataset {cfg.data.dataset}: {exc}") from exc
    info = {**info, "model": tcfg.name, "num_parameters": tcfg.num_parameters(), "num_items": tcfg.num_items}
    return Inputs(str(teacher_dir), info, str(prepared.path), prepared.num_items)


def run_compression_search(cfg: TuneCompressionConfig) -> CompressionSearchResult:
    """The whole search job (what `jobs/tune_compression.py` runs)."""
    from lmrec.tracking import mlflow_utils as mt
    from lmrec.training.trainer import ensure_ray

    t0 = time.time()
    tr = cfg.tracking
    ensure_ray()
    inputs = check_inputs(cfg)  # bad teacher / catalog mismatch: fails here, before any trial
    uri = tracking_uri(tr)
    exp_path = experiment_path(
        cfg.search.name, f"compress-{cfg.data.dataset.replace(':', '-')}", cfg.search.storage_path
    )
    name = exp_path.name
    tags = {"lmrec.kind": "compression_search", "lmrec.teacher": cfg.teacher, "lmrec.tune_name": name}
    parent = start_search_run(tr, name, flatten(to_dict(cfg)), tags, uri)
    logger = mt.RunLogger(parent, uri)
    logger.json(inputs.teacher_info, "teacher.json")
    print(f"[lmrec.compress] teacher {cfg.teacher}: {json.dumps(inputs.teacher_info, default=str)[:300]}", flush=True)
    print(f"[lmrec.compress] MLflow search run {parent} at {uri}", flush=True)

    keys, modes = cfg.objectives()
    try:
        grid = _tuner(cfg, inputs, parent, uri, exp_path).fit()
        trials, failed = trial_rows(grid, keys)
    except Exception:
        logger.end("FAILED")
        raise
    finished = [t for t in trials if t["status"] == "finished"]
    front_idx = pareto_front(finished, keys, modes)
    front = [finished[i] for i in front_idx]
    _register_front(cfg, front, parent, uri)
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="lmrec-compress-") as tmp:
        table = front_table(finished, front_idx, keys)
        (Path(tmp) / "pareto_front.md").write_text(table + "\n")
        logger.artifact(Path(tmp) / "pareto_front.md")
        files["table"] = "pareto_front.md"
        if finished:
            png = front_png(
                finished, front_idx, latency_key(cfg.latency.batch_sizes[0]), Path(tmp) / "pareto_front.png"
            )
            logger.artifact(png)
            files["png"] = "pareto_front.png"
    logger.json({"front": front, "trials": trials, "failed": failed}, "search.json")
    logger.metrics(
        {
            "trials_finished": len(finished),
            "trials_failed": len(failed),
            "front_size": len(front),
            "trials_stopped": len([t for t in trials if t["status"] == "stopped"]),
        }
    )
    logger.tags(
        {"lmrec.front_versions": ",".join(str(r.get("model_version")) for r in front if r.get("model_version"))}
    )
    logger.end("FINISHED")
    result = CompressionSearchResult(parent, trials, front, failed, time.time() - t0, files)
    print(
        f"[lmrec.compress] {len(finished)} finished, {len(failed)} failed, front of {len(front)}:\n{table}", flush=True
    )
    if cfg.out:
        result.files["summary"] = str(write_summary(cfg.out, result.to_dict()))
    return result


def _tuner(cfg: TuneCompressionConfig, inputs: Inputs, parent: str, uri: str, exp_path: Path) -> Any:
    """The Tuner: multi-objective Optuna, ASHA on validation NDCG@10, one `compression_trial` per point."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    sc = cfg.search
    keys, modes = cfg.objectives()
    # ASHA's horizon: a trial reports once per epoch (>= 1 step each) plus two final reports.
    max_reports = max(cfg.distill_steps, max(cfg.space.finetune_steps)) + 2
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        metric=NDCG_KEY,
        mode="max",
        max_t=max_reports,
        grace_period=min(sc.grace_period, max_reports),
        reduction_factor=sc.reduction_factor,
    )
    searcher = optuna_searcher(
        DefineCompressionSpace(cfg.space), keys, modes, sc.seed, sc.max_concurrent, list(sc.points_to_evaluate)
    )
    job = {
        "cfg": to_dict(cfg),
        "teacher_dir": inputs.teacher_dir,
        "teacher_source": inputs.teacher_info["source"],
        "tracking_uri": uri,
        "prepared_path": inputs.prepared_path,
        "calibration_rows": cfg.calibration_rows,
    }
    trainable = tune.with_resources(tune.with_parameters(compression_trial, job=job), {"cpu": sc.cpus_per_trial})
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=sc.num_samples),
        run_config=tune.RunConfig(
            name=exp_path.name,
            storage_path=str(exp_path.parent),
            callbacks=[trial_callback(uri, cfg.tracking.experiment, parent, "compression_trial")],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            verbose=1,
        ),
    )


def _register_front(cfg: TuneCompressionConfig, front: list[dict[str, Any]], parent: str, uri: str) -> None:
    """Attach each front variant to its trial's MLflow run and (with `tracking.register`) register it."""
    from lmrec.tracking import mlflow_utils as mt

    tr = cfg.tracking
    runs = trial_run_ids(parent, tr.experiment, uri)
    for row in front:
        run_id = run_for_trial(row["trial_id"], runs)
        row["run_id"] = run_id
        if run_id is None:
            continue
        mt.RunLogger(run_id, uri).artifacts(row["variant_dir"], mt.MODEL_ARTIFACT_PATH)
        if tr.register:
            tags = {k: str(v) for k, v in CompressionSpec(**row["spec"]).describe().items()}
            tags.update(
                {
                    "kind": "compressed",
                    "teacher": cfg.teacher,
                    "dataset": cfg.data.dataset,
                    "ndcg_at_10": f"{row[NDCG_KEY]:.4f}",
                    "size_bytes": str(int(row[SIZE_KEY])),
                    **{f"p50_ms_b{b}": f"{row[latency_key(b)]:.3f}" for b in cfg.latency.batch_sizes},
                    "search_run_id": parent,
                }
            )
            row["model_version"] = mt.register_model(
                run_id, tr.model_name, tags=tags, uri=uri, description=f"compressed variant: {row['label']}"
            )
