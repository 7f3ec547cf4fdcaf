"""`lmrec embed` / jobs/embed_items.py: prepare a dataset with its item content, embed the item text
with Ray Data, and log the embeddings to MLflow with their lineage (dataset, encoder, text hash)."""

from __future__ import annotations

from typing import Any

from lmrec.config import to_dict
from lmrec.content.config import EmbedJobConfig
from lmrec.content.embed import META, EmbeddingResult, embed_items, probe_encoder, text_table


def run_embed_job(cfg: EmbedJobConfig) -> EmbeddingResult:
    """The encoder is checked before Ray starts; a cached embedding is logged again as a new run."""
    import ray

    from lmrec.data.prepare import ITEMS, prepare_dataset

    probe_encoder(cfg.embed)  # an encoder that cannot load fails here, naming it
    if not ray.is_initialized():
        ray.init()  # the cluster in RAY_ADDRESS (`ray job submit`), else a local one
    prepared = prepare_dataset(cfg.data)
    if prepared.manifest.get("item_content") is None:
        raise ValueError(
            f"data.items: dataset {prepared.manifest['dataset']!r} has no item content to embed "
            f"(items.source={cfg.data.items.source!r}); name a Parquet or CSV with text_columns"
        )
    result = embed_items(prepared.path / ITEMS, cfg.embed, force=cfg.force)
    result.run_id = _log(cfg, prepared, result)
    return result


def _log(cfg: EmbedJobConfig, prepared: Any, result: EmbeddingResult) -> str:
    import mlflow

    from lmrec.tracking.mlflow_utils import RunLogger, resolve_tracking_uri, start_run

    meta = result.meta
    params = {
        **{f"embed.{k}": v for k, v in to_dict(cfg.embed).items()},
        "data.dataset": prepared.manifest["dataset"],
        "data.config_hash": prepared.manifest["config_hash"],
        "embed.dim": meta["dim"],
    }
    tags = {
        "lmrec.stage": "embed_items",
        "lmrec.embedding_key": meta["key"],
        "lmrec.embedding_path": str(result.path),
        "lmrec.cached": str(result.cached).lower(),
    }
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri)
    run_id = start_run(
        cfg.tracking.experiment,
        cfg.tracking.run_name or f"embed-{prepared.manifest['dataset']}-{cfg.embed.encoder}",
        params=params,
        tags=tags,
        parent_run_id=cfg.tracking.parent_run_id,
        uri=uri,
    )
    log = RunLogger(run_id, uri)
    log.metrics({k: float(meta[k]) for k in ("items", "items_without_text", "seconds", "items_per_s") if meta.get(k)})
    log.artifact(result.path / META, "embeddings")
    log.artifact(result.path / "embeddings.parquet", "embeddings")
    log.json(prepared.manifest.get("item_content"), "item_content.json")
    texts, _ = text_table(prepared.path / "items.parquet")
    mlflow.set_tracking_uri(uri)
    dataset = mlflow.data.from_pandas(
        texts.to_pandas(), source=str(prepared.path), name=f"{prepared.manifest['dataset']}-items"
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(dataset, context="item_text")
    log.end()
    return run_id
