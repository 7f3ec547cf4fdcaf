"""The whole loop as one job: prepare -> train -> evaluate -> compress -> explore -> promote -> deploy.

Each stage is a Ray task or a trainer/Tune run of its own subsystem, tracked in MLflow
under one pipeline parent run (tag `lmrec.pipeline_run_id` on every stage run). Stage
outputs are recorded in a state file (`LMREC_HOME/pipelines/<name>/state.json`,
written atomically) and as tags of the parent run, so resubmitting the job with the
same `name` skips the stages that finished and resumes at the first that did not.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from lmrec.config import ConfigModel, check, flatten, from_dict, replace, to_dict
from lmrec.paths import lmrec_home
from lmrec.tracking.config import TrackingConfig
from lmrec.training.config import TrainJobConfig
from lmrec.tuning.compression import TuneCompressionConfig
from lmrec.tuning.exploration import TuneExplorationConfig

STAGES = ("prepare", "train", "evaluate", "compress", "explore", "promote", "deploy")


class PromoteConfig(ConfigModel):
    """Which version becomes `to_alias`: the trained model, or the best compressed variant."""

    source: str = "trained"  # trained | compressed (the front variant with the highest NDCG@10)
    to_alias: str = "champion"
    min_ndcg_ratio: float = 0.0  # compressed: keep >= this fraction of the teacher's NDCG@10, else promote the teacher

    def validate_config(self) -> None:
        check(self.source in ("trained", "compressed"), "source", "must be 'trained' or 'compressed'")
        check(0 <= self.min_ndcg_ratio <= 1, "min_ndcg_ratio", "must be in [0, 1]")


class DeployConfig(ConfigModel):
    """Where the Serve app runs; `app` holds ServeConfig keys (model_uri is set by the pipeline)."""

    app_name: str = "recommender"
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = 8000
    app: dict[str, Any] = Field(default_factory=dict)
    healthy_timeout_s: float = 300.0

    def validate_config(self) -> None:
        check(1 <= self.port <= 65535, "port", "must be a TCP port")
        check(self.route_prefix.startswith("/"), "route_prefix", "must start with '/'")
        from lmrec.serving.config import ServeConfig

        from_dict(ServeConfig, self.app, "app")


class PipelineConfig(ConfigModel):
    """Everything `jobs/pipeline.py` needs."""

    name: str = "lmrec-pipeline"  # the resume key: resubmit with the same name to continue
    stages: list[str] = Field(default_factory=lambda: list(STAGES))
    train: TrainJobConfig = Field(default_factory=TrainJobConfig)
    compress: TuneCompressionConfig = Field(default_factory=TuneCompressionConfig)
    explore: TuneExplorationConfig = Field(default_factory=TuneExplorationConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig(experiment="lmrec-pipeline"))
    state_dir: str | None = None  # None: LMREC_HOME/pipelines/<name>

    def validate_config(self) -> None:
        check(bool(self.name) and "/" not in self.name, "name", "must be a non-empty name without '/'")
        bad = [s for s in self.stages if s not in STAGES]
        check(not bad, "stages", f"unknown stage(s) {bad}; stages are {list(STAGES)}")
        order = [s for s in STAGES if s in self.stages]
        check(order == list(self.stages), "stages", f"stages must keep the order {list(STAGES)}")


class PipelineState:
    """Completed stages and their outputs, persisted atomically after every stage."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"stages": {}}

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def output(self, stage: str) -> dict[str, Any]:
        return self.data["stages"].get(stage, {})

    def record(self, stage: str, output: dict[str, Any]) -> None:
        self.data["stages"][stage] = {**output, "finished_unix": int(time.time())}
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def _log(msg: str) -> None:
    print(f"[lmrec.pipeline] {msg}", flush=True)


# ---------------------------------------------------------------- stages


def stage_prepare(cfg: PipelineConfig, st: PipelineState, ctx: dict[str, Any]) -> dict[str, Any]:
    import ray

    from lmrec.data.prepare import prepare_dataset

    prepared = ray.get(ray.remote(num_cpus=1)(prepare_dataset).remote(cfg.train.data))  # a Ray task
    return {
        "prepared_path": str(prepared.path),
        "num_users": prepared.num_users,
        "num_items": prepared.num_items,
        "dataset": prepared.manifest["dataset"],
        "cached": prepared.cached,
    }


def stage_train(cfg: PipelineConfig, st: PipelineState, ctx: dict[str, Any]) -> dict[str, Any]:
    from lmrec.training.trainer import run_train_job

    job = replace(
        cfg.train,
        [
            f"tracking.parent_run_id={ctx['pipeline_run_id']}",
            f"train.run_name={cfg.name}-train",
            f"tracking.alias={cfg.train.tracking.alias}",
        ],
    )
    result = run_train_job(job, extra_tags=ctx["tags"])
    return {
        "run_id": result.run_id,
        "model_version": result.model_version,
        "model_uri": result.model_uri,
        "checkpoint": result.checkpoint_path,
        "test_ndcg_at_10": result.metrics.get("test/full/ndcg@10"),
        "test_hr_at_10": result.metrics.get("test/full/hr@10"),
    }


def _evaluate_task(model_uri: str, data_cfg: dict[str, Any], tracking_uri: str | None) -> dict[str, float]:
    from lmrec.data.config import DataConfig
    from lmrec.data.prepare import prepare_dataset
    from lmrec.data.sequences import SequenceData
    from lmrec.evaluation.protocols import evaluate_scorer, model_scorer, popularity_scorer
    from lmrec.models.artifacts import load_model_dir
    from lmrec.tracking.mlflow_utils import download_model

    model, _, _ = load_model_dir(download_model(model_uri, uri=tracking_uri))
    data = SequenceData.load(prepare_dataset(from_dict(DataConfig, data_cfg)).path, with_meta=False)
    out = {
        f"model/{k}": v for k, v in evaluate_scorer(model_scorer(model), data, "test", model.config.max_seq_len).items()
    }
    out.update({f"popularity/{k}": v for k, v in evaluate_scorer(popularity_scorer(data), data, "test").items()})
    return out


def stage_evaluate(cfg: PipelineConfig, st: PipelineState, ctx: dict[str, Any]) -> dict[str, Any]:
    import ray

    from lmrec.tracking import mlflow_utils as mt

    model_uri = st.output("train")["model_uri"]
    metrics = ray.get(
        ray.remote(num_cpus=1)(_evaluate_task).remote(model_uri, to_dict(cfg.train.data), cfg.tracking.tracking_uri)
    )
    run_id = mt.start_run(
        cfg.tracking.experiment,
        f"{cfg.name}-evaluate",
        {"model_uri": model_uri},
        {**ctx["tags"], "lmrec.kind": "evaluate"},
        parent_run_id=ctx["pipeline_run_id"],
        uri=cfg.tracking.tracking_uri,
    )
    logger = mt.RunLogger(run_id, cfg.tracking.tracking_uri)
    logger.metrics(metrics)
    logger.json(metrics, "evaluation.json")
    logger.end()
    return {
        "run_id": run_id,
        "model_ndcg_at_10": metrics["model/full/ndcg@10"],
        "popularity_ndcg_at_10": metrics["popularity/full/ndcg@10"],
    }


def stage_compress(cfg: PipelineConfig, st: PipelineState, ctx: dict[str, Any]) -> dict[str, Any]:
    from lmrec.tuning.compression import NDCG_KEY, SIZE_KEY, run_compression_search

    train = st.output("train")
    ccfg = replace(
        cfg.compress,
        [
            f"teacher={train['model_uri']}",
            f"tracking.parent_run_id={ctx['pipeline_run_id']}",
            f"search.name={cfg.name}-compress",
            f"tracking.model_name={cfg.train.tracking.model_name}",
        ],
    )  # the front joins the teacher's model
    ccfg.data = cfg.train.data  # the teacher's own dataset: its catalog matches by construction
    result = run_compression_search(ccfg)
    _tag(result.parent_run_id, ctx, cfg)
    front = [
        {
            "model_version": f.get("model_version"),
            "ndcg_at_10": f.get(NDCG_KEY),
            "size_bytes": f.get(SIZE_KEY),
            "label": f.get("label"),
        }
        for f in result.front
    ]
    return {"run_id": result.parent_run_id, "front": front, "failed_trials": len(result.failed)}


def stage_explore(cfg: PipelineConfig, st: PipelineState, ctx: dict[str, Any]) -> dict[str, Any]:
    from lmrec.tuning.exploration import run_exploration_search

    ecfg = replace(cfg.explore, [f"tracking.parent_run_id={ctx['pipeline_run_id']}", f"search.name={cfg.name}-explore"])
    result = run_exploration_search(ecfg)
    _tag(result.parent_run_id, ctx, cfg)
    return {
        "run_id": result.parent_run_id,
        "policy_uri": result.policy_uri,
        "best": result.best.to_dict(),
        "best_metrics": result.best_metrics,
    }


def _tag(run_id: str, ctx: dict[str, Any], cfg: PipelineConfig) -> None:
    from lmrec.tracking.mlflow_utils import RunLogger

    RunLogger(run_id, cfg.tracking.tracking_uri).tags(ctx["tags"])


def stage_promote(cfg: PipelineConfig, st: PipelineState, ctx: dict[str, Any]) -> dict[str, Any]:
    from lmrec.tracking import mlflow_utils as mt

    train = st.output("train")
    name = cfg.train.tracking.model_name
    version, why = train["model_version"], "trained model"
    if cfg.promote.source == "compressed" and st.done("compress"):
        front = [
            f for f in st.output("compress")["front"] if f.get("model_version") and f.get("ndcg_at_10") is not None
        ]
        teacher = st.output("evaluate").get("model_ndcg_at_10") or train.get("test_ndcg_at_10") or 0.0
        good = [f for f in front if f["ndcg_at_10"] >= cfg.promote.min_ndcg_ratio * teacher]
        if good:
            best = max(good, key=lambda f: f["ndcg_at_10"])
            version, why = str(best["model_version"]), f"compressed variant {best.get('label')}"
    mt.set_alias(name, cfg.promote.to_alias, version, cfg.tracking.tracking_uri)
    _log(f"{name}@{cfg.promote.to_alias} -> version {version} ({why})")
    return {"model_name": name, "alias": cfg.promote.to_alias, "version": str(version), "reason": why}


def stage_deploy(cfg: PipelineConfig, st: PipelineState, ctx: dict[str, Any]) -> dict[str, Any]:
    import urllib.request

    from ray import serve

    from lmrec.serving import launch

    promoted = st.output("promote")
    args = {**cfg.deploy.app, "model_uri": f"models:/{promoted['model_name']}@{promoted['alias']}"}
    if st.done("explore") and "policy_uri" not in args.get("exploration", {}):
        args["exploration"] = {**args.get("exploration", {}), "policy_uri": st.output("explore")["policy_uri"]}
    app = launch.build_app(args)
    serve.start(http_options={"host": cfg.deploy.host, "port": cfg.deploy.port})
    serve.run(app, name=cfg.deploy.app_name, route_prefix=cfg.deploy.route_prefix)  # updates it if it runs
    base = f"http://{cfg.deploy.host}:{cfg.deploy.port}{cfg.deploy.route_prefix.rstrip('/')}"
    want = f"{promoted['model_name']}/{promoted['version']}"
    deadline, seen = time.time() + cfg.deploy.healthy_timeout_s, None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/version", timeout=5) as r:
                seen = json.loads(r.read()).get("model_version")
            if seen == want:
                break
        except Exception:  # noqa: BLE001 (starting)
            pass
        time.sleep(1.0)
    if seen != want:
        raise RuntimeError(f"the serve app at {base} reports {seen!r}, expected {want!r}")
    return {"url": base, "model_version": want, "app_name": cfg.deploy.app_name, "args": args}


STAGE_FUNCS: dict[str, Callable[[PipelineConfig, PipelineState, dict[str, Any]], dict[str, Any]]] = {
    "prepare": stage_prepare,
    "train": stage_train,
    "evaluate": stage_evaluate,
    "compress": stage_compress,
    "explore": stage_explore,
    "promote": stage_promote,
    "deploy": stage_deploy,
}


# ---------------------------------------------------------------- driver


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run (or resume) the pipeline named `cfg.name`; returns the state of every stage."""
    from lmrec.tracking import mlflow_utils as mt
    from lmrec.training.trainer import ensure_ray

    if "explore" in cfg.stages:  # its inputs must exist before hours of training are spent
        from lmrec.config import ConfigError
        from lmrec.tuning.exploration import preflight

        try:
            preflight(cfg.explore)
        except ConfigError as exc:
            raise ConfigError(f"explore.{exc.key}", exc.message) from exc
    ensure_ray()
    state = PipelineState(Path(cfg.state_dir or (lmrec_home() / "pipelines" / cfg.name)) / "state.json")
    run_id = state.data.get("pipeline_run_id")
    if run_id is None:
        run_id = mt.start_run(
            cfg.tracking.experiment,
            cfg.name,
            flatten(to_dict(cfg)),
            {"lmrec.kind": "pipeline", "lmrec.pipeline": cfg.name},
            uri=cfg.tracking.tracking_uri,
        )
        state.data["pipeline_run_id"] = run_id
        state.save()
        _log(f"started pipeline {cfg.name}: MLflow run {run_id}")
    else:
        done = [s for s in STAGES if state.done(s)]
        _log(f"resuming pipeline {cfg.name} (run {run_id}); finished stages: {done}")
    ctx = {"pipeline_run_id": run_id, "tags": {"lmrec.pipeline_run_id": run_id, "lmrec.pipeline": cfg.name}}
    logger = mt.RunLogger(run_id, cfg.tracking.tracking_uri)
    for stage in cfg.stages:
        if state.done(stage):
            _log(f"stage {stage}: already done, skipped")
            continue
        _log(f"stage {stage}: running")
        t0 = time.time()
        try:
            out = STAGE_FUNCS[stage](cfg, state, ctx)
        except Exception:
            logger.tags({f"lmrec.stage.{stage}": "failed"})
            logger.end("FAILED")
            raise
        out["seconds"] = round(time.time() - t0, 1)
        state.record(stage, out)
        logger.tags({f"lmrec.stage.{stage}": "done"})
        logger.metrics({f"stage_seconds/{stage}": out["seconds"]})
        _log(f"stage {stage}: done in {out['seconds']}s")
    logger.json(state.data, "pipeline_state.json")
    logger.end("FINISHED")
    return state.data
