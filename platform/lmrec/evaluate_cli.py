"""`lmrec evaluate`: metrics of a registered model or a training checkpoint, as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from lmrec.config import from_dict
from lmrec.data.config import DataConfig
from lmrec.data.prepare import prepare_dataset
from lmrec.data.sequences import SequenceData
from lmrec.evaluation.protocols import evaluate_scorer, model_scorer
from lmrec.models.artifacts import load_model_dir
from lmrec.models.config import SeqRecConfig
from lmrec.models.seqrec import SeqRecModel
from lmrec.training.steps import EXPORT_DIR, JOB_CONFIG_FILE, MODEL_CONFIG_FILE
from lmrec.training.trainer import write_metrics_json


class CatalogMismatch(ValueError):
    """The model's item vocabulary is not the dataset's."""


def load_checkpoint_model(path: str | Path) -> tuple[SeqRecModel, dict[str, Any]]:
    """A plain (unsharded) model from an lmrec DCP checkpoint, plus the job config it came from."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    path = Path(path)
    if not (path / MODEL_CONFIG_FILE).exists():
        raise FileNotFoundError(f"{path} is not an lmrec checkpoint (no {MODEL_CONFIG_FILE})")
    job = json.loads((path / JOB_CONFIG_FILE).read_text()) if (path / JOB_CONFIG_FILE).exists() else {}
    if (path / EXPORT_DIR).is_dir():
        model, _, _ = load_model_dir(path / EXPORT_DIR)
        return model, job
    model = SeqRecModel(SeqRecConfig.from_dict(json.loads((path / MODEL_CONFIG_FILE).read_text())))
    sd = {"model": get_model_state_dict(model)}
    dcp.load(sd, checkpoint_id=str(path))  # DCP reshards FSDP shards into this single process
    set_model_state_dict(model, sd["model"])
    return model.eval(), job


def evaluate_main(args: argparse.Namespace) -> int:
    data_cfg: DataConfig | None = None
    if args.checkpoint:
        model, job = load_checkpoint_model(args.checkpoint)
        if job.get("data"):
            data_cfg = from_dict(DataConfig, job["data"])
        vocab: list[int] | None = None
        source = f"checkpoint {args.checkpoint}"
    else:
        from lmrec.tracking.mlflow_utils import download_model

        local = download_model(args.model_uri)
        model, vocab, meta = load_model_dir(local)
        if meta.get("data_config") and not args.dataset:
            data_cfg = from_dict(DataConfig, meta["data_config"])  # the exact data the model was trained on
        elif meta.get("dataset") and not args.dataset:
            data_cfg = DataConfig(dataset=meta["dataset"])
        source = args.model_uri
    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"dataset={args.dataset}")
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    base = data_cfg or DataConfig()
    from lmrec.config import replace

    data_cfg = replace(base, overrides) if overrides else base
    prepared = prepare_dataset(data_cfg)  # cached: no Ray needed when already prepared
    data = SequenceData.load(prepared.path, with_meta=False)
    if vocab is not None and list(vocab) != list(prepared.manifest["item_ids"]):
        raise CatalogMismatch(
            f"{source} was trained on a different item catalog ({len(vocab)} items) than {data_cfg.dataset} "
            f"({prepared.num_items} items)"
        )
    if model.config.num_items != data.num_items:
        raise CatalogMismatch(
            f"{source} scores {model.config.num_items} items; {data_cfg.dataset} has {data.num_items}"
        )
    with torch.no_grad():
        metrics = evaluate_scorer(
            model_scorer(model),
            data,
            args.split,
            model.config.max_seq_len,
            ks=[int(k) for k in args.ks.split(",")],
            protocols=args.protocols.split(","),
            max_users=args.max_users,
        )
    metrics = {f"{args.split}/{k}" if "/" in k else k: v for k, v in metrics.items()}
    out = {"source": source, "dataset": data_cfg.dataset, "split": args.split, "metrics": metrics}
    write_metrics_json(out, args.out)
    width = max(len(k) for k in metrics)
    for k, v in sorted(metrics.items()):
        print(f"  {k:<{width}}  {v:.4f}")
    print(f"wrote {args.out}")
    return 0
