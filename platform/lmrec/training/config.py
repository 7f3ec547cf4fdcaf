"""Typed config of a training job: data, model, train, eval, tracking."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmrec.config import ConfigModel, check
from lmrec.data.config import DataConfig
from lmrec.evaluation.config import EvalConfig
from lmrec.models.sizes import ModelSpec
from lmrec.tracking.config import TrackingConfig


class TrainConfig(ConfigModel):
    """Optimisation, sharding, checkpointing and the Ray Train worker group."""

    epochs: int = 10
    batch_size: int = 128  # per worker
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = 1.0  # 0 disables clipping
    seed: int = 42
    sliding_window: bool = False  # also train on earlier windows of long sequences
    max_steps_per_epoch: int | None = None  # cap for smoke tests and benchmarks
    # Ray Train worker group
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    # PACK fills nodes first; SPREAD / STRICT_SPREAD put workers on different nodes (one per node)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    strategy: Literal["fsdp", "ddp", "none"] = "fsdp"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    # checkpoints and fault tolerance
    checkpoint_every_steps: int = 0  # 0 = only at epoch ends
    # checkpoint at the end of every Nth epoch; 0 = none at epoch ends (then only every
    # checkpoint_every_steps and the final one). On CPU a DCP save slows the steps after it
    # (docs/benchmarks.md), so short CPU runs may save less often.
    checkpoint_every_epochs: int = 1
    keep_checkpoints: int = 2
    max_failures: int = 2
    storage_path: str | None = None  # local folder or URI (s3://, gs://); None = LMREC_HOME/ray_results
    run_name: str | None = None  # Ray Train run name; reusing it resumes that run
    log_every_steps: int = 50
    select_best: bool = True  # test/export the weights of the best validation epoch
    early_stopping_patience: int = 0  # stop after N validations without improvement (0 = never)

    def validate_config(self) -> None:
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "must be two numbers in [0, 1)")
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(self.grad_clip >= 0, "grad_clip", "must be >= 0")
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        check(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")
        check(
            self.strategy != "none" or self.num_workers == 1,
            "strategy",
            "strategy 'none' trains on one worker; use 'fsdp' or 'ddp' with num_workers > 1",
        )
        check(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", "must be >= 0")
        check(self.checkpoint_every_epochs >= 0, "checkpoint_every_epochs", "must be >= 0")
        check(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        check(self.max_failures >= -1, "max_failures", "must be >= -1 (-1 = retry forever)")
        check(self.log_every_steps >= 1, "log_every_steps", "must be >= 1")
        check(self.early_stopping_patience >= 0, "early_stopping_patience", "must be >= 0")
        if self.max_steps_per_epoch is not None:
            check(self.max_steps_per_epoch >= 1, "max_steps_per_epoch", "must be >= 1")


class TrainJobConfig(ConfigModel):
    """Everything `jobs/train.py` and `lmrec train` need."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    prepared_path: str | None = None  # filled in by the driver after preparation
    text_embeddings_path: str | None = None  # filled in by the driver when model.content.text is set
