"""Inside a training-search trial: the standard training loop in this process, reporting to Tune.

Tune runs `train_trial` by reference: it stays a top-level function here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from lmrec.config import deep_merge, from_dict, parse_overrides, to_dict
from lmrec.tuning.training.config import TuneTrainConfig
from lmrec.tuning.training.space import overrides


class TuneContext:
    """A `RunContext` for one in-process trial: each validated epoch is one Tune report (ASHA's
    time unit), keys MLflow-safe; the last report carries the exported model as a checkpoint."""

    rank, world_size = 0, 1

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    def latest_checkpoint(self) -> Any | None:
        from ray import tune

        ckpt = tune.get_checkpoint()
        return ckpt.as_directory() if ckpt is not None else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from ray import tune

        safe = {k.replace("@", "_at_"): v for k, v in metrics.items() if isinstance(v, (int, float))}
        if not any(k.startswith("valid/") for k in safe) and not metrics.get("final"):
            if checkpoint_dir:
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
            return  # an epoch without validation: nothing for ASHA to compare
        final = bool(metrics.get("final"))
        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if final and checkpoint_dir else None
        tune.report(safe, checkpoint=ckpt)
        if checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def publish(self, values: dict[str, float], tags: dict[str, str]) -> None:
        return None


def trial_config(params: dict[str, Any], job: dict[str, Any]) -> Any:
    """The TrainJobConfig of one sampled point (raises ConfigError for an invalid point)."""
    from lmrec.training.config import TrainJobConfig

    cfg = from_dict(TuneTrainConfig, job["cfg"])
    base = {k: to_dict(getattr(cfg, k)) for k in ("data", "model", "train", "eval")}
    base["tracking"] = {"tracking_uri": job["tracking_uri"], "register": False}
    tj = from_dict(TrainJobConfig, deep_merge(base, parse_overrides(overrides(params))))
    tj.prepared_path = job["prepared_path"]
    tj.text_embeddings_path = job.get("text_embeddings_path")
    tj.train.checkpoint_every_epochs = 0  # Tune keeps the final report's model only
    tj.train.strategy = "none"  # one process per trial: nothing to shard
    return tj


def train_trial(params: dict[str, Any], job: dict[str, Any]) -> None:
    """The Tune trial: train with the sampled point, report each validation, end with test metrics."""
    from lmrec.config import ConfigError
    from lmrec.training.loop import run_training

    try:
        tj = trial_config(params, job)
    except ConfigError as exc:  # Tune copies a trial's exception; ConfigError cannot be rebuilt from its args
        raise ValueError(str(exc)) from None
    torch.set_num_threads(max(1, int(job["threads"])))
    run_training(tj, TuneContext())


def export_dir(checkpoint_path: str | Path) -> Path | None:
    """The exported model inside a trial's final checkpoint, if any."""
    from lmrec.training.steps import EXPORT_DIR

    p = Path(checkpoint_path) / EXPORT_DIR
    return p if p.is_dir() else None
