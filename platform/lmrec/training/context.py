"""Where a training run runs: the `RunContext` protocol, `LocalContext` (in-process) and `RayTrainContext`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

# ------------------------------------------------------------------ environment


class RunContext(Protocol):
    """What the loop needs from where it runs."""

    rank: int
    world_size: int
    device: torch.device

    def latest_checkpoint(self) -> Any | None:
        """A context manager yielding a local folder, or None."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        """Publish metrics (and a checkpoint folder this rank wrote)."""

    def publish(self, values: dict[str, float], tags: dict[str, str]) -> None:
        """Live gauges for monitoring (Prometheus under Ray); may be a no-op."""


class LocalContext:
    """No Ray: one process, or one rank of a plain torch.distributed group (torchrun).

    Checkpoints go to `root/checkpoint_<step>`; with several ranks each rank's shard
    files land in the same folder, as Ray Train merges them.
    """

    def __init__(self, root: str | Path | None = None, device: str = "cpu") -> None:
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if distributed else 0
        self.world_size = dist.get_world_size() if distributed else 1
        self.device = torch.device(device)
        self.root = Path(root) if root else None
        self.reports: list[dict[str, Any]] = []
        self.checkpoints: list[Path] = []

    def latest_checkpoint(self) -> Any | None:
        if self.root is None:
            return None
        found = sorted(self.root.glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[1]))
        if not found:
            return None
        from contextlib import nullcontext

        return nullcontext(str(found[-1]))

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir and self.root is not None:
            dst = self.root / f"checkpoint_{metrics.get('global_step', len(self.reports)):08d}"
            if dst.exists() and self.world_size == 1:
                shutil.rmtree(dst)
            shutil.copytree(checkpoint_dir, dst, dirs_exist_ok=True)
            self.checkpoints.append(dst)
        if checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def publish(self, values: dict[str, float], tags: dict[str, str]) -> None:
        return None


class RayTrainContext:
    """Inside a Ray Train worker (Train V2 APIs)."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def latest_checkpoint(self) -> Any | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        return ckpt.as_directory() if ckpt is not None else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train
        from ray.train import Checkpoint

        ckpt = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)
        if checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    _gauges: dict[str, Any] = {}

    def publish(self, values: dict[str, float], tags: dict[str, str]) -> None:
        """Gauges on Ray's Prometheus endpoint: lmrec_train_<name>{run, rank, ...}."""
        from ray.util import metrics

        for name, value in values.items():
            key = "lmrec_train_" + "".join(c if c.isalnum() else "_" for c in name)
            gauge = self._gauges.get(key)
            if gauge is None:
                gauge = metrics.Gauge(key, description=f"lmrec training: {name}", tag_keys=tuple(sorted(tags)))
                self._gauges[key] = gauge
            gauge.set(float(value), tags=tags)
