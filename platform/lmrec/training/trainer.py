"""Driver side of a training job: prepare -> MLflow run -> TorchTrainer.fit -> register.

The config is validated before this module asks Ray for anything. Ray is
initialised only here (`ensure_ray`), joining `RAY_ADDRESS` when a job runs on a
cluster via `ray job submit`, else starting a local instance.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmrec.config import flatten, to_dict
from lmrec.data.prepare import PreparedDataset, prepare_dataset
from lmrec.paths import default_storage_path
from lmrec.training.config import TrainJobConfig

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    metrics: dict[str, Any]
    run_id: str | None
    model_version: str | None
    checkpoint_path: str | None
    prepared: PreparedDataset
    seconds: float
    model_uri: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster in RAY_ADDRESS (set by `ray job submit`) or start a local one."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        ray.init(num_cpus=num_cpus)


def build_trainer(cfg: TrainJobConfig, run_name: str, storage_path: str, callbacks: list[Any] | None = None) -> Any:
    """A TorchTrainer (Train V2) running `train_loop_per_worker` on `cfg.train.num_workers` workers."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from lmrec.training.loop import train_loop_per_worker

    tc = cfg.train
    resources = {"CPU": tc.cpus_per_worker}
    if tc.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=to_dict(cfg),
        torch_config=TorchConfig(backend="nccl" if tc.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=tc.num_workers,
            use_gpu=tc.use_gpu,
            resources_per_worker=resources,
            placement_strategy=tc.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=tc.keep_checkpoints),
            callbacks=callbacks or [],
        ),
    )


def default_run_name(cfg: TrainJobConfig) -> str:
    return (
        cfg.train.run_name
        or f"seqrec-{cfg.data.dataset.replace(':', '-')}-{cfg.model.size}-{time.strftime('%Y%m%d-%H%M%S')}"
    )


def check_content_encoder(cfg: TrainJobConfig) -> None:
    """An item-text encoder that cannot load fails here, before Ray starts, naming it."""
    if cfg.model.content.text:
        from lmrec.content.config import EmbedConfig
        from lmrec.content.embed import probe_encoder

        probe_encoder(EmbedConfig(encoder=cfg.model.content.text))


def text_embeddings(cfg: TrainJobConfig, prepared: PreparedDataset) -> None:
    """With `model.content.text`: embed the item text with Ray Data (cached) into `text_embeddings_path`."""
    if not cfg.model.content.text or cfg.text_embeddings_path:
        return
    from lmrec.content.config import EmbedConfig
    from lmrec.content.embed import embed_items
    from lmrec.data.prepare import ITEMS

    if prepared.manifest.get("item_content") is None:
        raise ValueError(
            f"model.content.text: dataset {prepared.manifest['dataset']!r} has no item text "
            f"(data.items.source={cfg.data.items.source!r})"
        )
    result = embed_items(prepared.path / ITEMS, EmbedConfig(encoder=cfg.model.content.text))
    print(
        f"[lmrec] item text embeddings ({cfg.model.content.text}, {result.meta['items']} items"
        f"{', cached' if result.cached else ''}) at {result.path}",
        flush=True,
    )
    cfg.text_embeddings_path = str(result.path)


def run_train_job(
    cfg: TrainJobConfig, num_cpus: int | None = None, extra_tags: dict[str, str] | None = None
) -> TrainResult:
    """The whole training job: what `jobs/train.py`, `lmrec train` and `lmrec demo` run."""
    from lmrec.tracking import mlflow_utils as mt

    t0 = time.time()
    check_content_encoder(cfg)
    ensure_ray(num_cpus)
    prepared = prepare_dataset(cfg.data)
    cfg.prepared_path = str(prepared.path)
    text_embeddings(cfg, prepared)
    model_cfg = cfg.model.build(prepared.num_items)
    run_name = default_run_name(cfg)
    storage = cfg.train.storage_path or str(default_storage_path())

    run_id = cfg.tracking.run_id
    if run_id is None:
        params = flatten(to_dict(cfg))
        params.pop("prepared_path", None)
        params.pop("text_embeddings_path", None)
        params.update(
            {
                "model.num_parameters": model_cfg.num_parameters(),
                "data.num_items": prepared.num_items,
                "data.num_users": prepared.num_users,
            }
        )
        tags = {
            "lmrec.kind": "train",
            "lmrec.dataset": prepared.manifest["dataset"],
            "lmrec.model_size": model_cfg.name,
            "lmrec.ray_run_name": run_name,
            **(extra_tags or {}),
        }
        if prepared.manifest.get("notice"):
            tags["lmrec.data_notice"] = prepared.manifest["notice"]
        run_id = mt.start_run(
            cfg.tracking.experiment,
            cfg.tracking.run_name or run_name,
            params,
            tags,
            parent_run_id=cfg.tracking.parent_run_id,
            uri=cfg.tracking.tracking_uri,
        )
        cfg.tracking.run_id = run_id
        logger = mt.RunLogger(run_id, cfg.tracking.tracking_uri)
        manifest = {k: v for k, v in prepared.manifest.items() if k != "item_ids"}
        logger.json(manifest, "dataset/manifest.json")
    logger = mt.RunLogger(run_id, cfg.tracking.tracking_uri)
    print(f"[lmrec] MLflow run {run_id} at {mt.resolve_tracking_uri(cfg.tracking.tracking_uri)}", flush=True)
    trainer = build_trainer(cfg, run_name, storage)
    try:
        result = trainer.fit()
    except Exception:
        logger.end("FAILED")
        raise
    metrics = dict(result.metrics or {})
    ckpt_path = result.checkpoint.path if result.checkpoint is not None else None
    version = None
    model_uri = None
    if cfg.tracking.register:
        version = mt.register_model(
            run_id,
            cfg.tracking.model_name,
            alias=cfg.tracking.alias,
            tags={
                "dataset": prepared.manifest["dataset"],
                "model_size": model_cfg.name,
                "ndcg_at_10": f"{metrics.get('test/full/ndcg@10', float('nan')):.4f}",
                "kind": "trained",
            },
            uri=cfg.tracking.tracking_uri,
        )
        model_uri = f"models:/{cfg.tracking.model_name}/{version}"
        logger.tags({"lmrec.model_version": version})
    logger.tags({"lmrec.checkpoint": ckpt_path or ""})
    logger.end("FINISHED")
    return TrainResult(metrics, run_id, version, ckpt_path, prepared, time.time() - t0, model_uri)


def write_metrics_json(metrics: dict[str, Any], path: str | None) -> Path | None:
    if not path:
        return None
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkstemp(dir=p.parent, suffix=".tmp")[1])
    tmp.write_text(json.dumps(metrics, indent=1, sort_keys=True))
    tmp.replace(p)
    return p
