"""Configs of the compression search (space, Tune settings, the job) and the metric keys it reports.

Loading and validating them imports neither Ray nor Optuna.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lmrec.compression.latency import LatencyConfig
from lmrec.compression.spec import CompressionSpec
from lmrec.config import ConfigModel, check, from_dict
from lmrec.data.config import DataConfig
from lmrec.evaluation.config import EvalConfig
from lmrec.tracking.config import TrackingConfig
from lmrec.training.config import TrainConfig
from lmrec.tuning.search import check_range

NDCG_KEY = "valid/full/ndcg_at_10"  # MLflow-safe name of valid/full/ndcg@10
SIZE_KEY = "size_bytes"
VARIANT_DIR = "variant"


def safe_key(key: str) -> str:
    """MLflow metric names allow [A-Za-z0-9_-. /]: 'ndcg@10' -> 'ndcg_at_10'."""
    return key.replace("@", "_at_")


def latency_key(batch_size: int) -> str:
    """The reported p50 latency key of one batch size."""
    return f"b{batch_size}/p50_ms"


class CompressionSpace(ConfigModel):
    """What the search samples. Lists of choices, except `temperature` and `alpha` ([low, high])."""

    student: list[bool] = Field(default_factory=lambda: [True, False])  # distil a student, or compress the teacher
    student_layers: list[int] = Field(default_factory=lambda: [1, 2])
    student_hidden: list[int] = Field(default_factory=lambda: [32, 64])
    temperature: list[float] = Field(default_factory=lambda: [1.0, 4.0])
    alpha: list[float] = Field(default_factory=lambda: [0.0, 0.9])
    prune: list[str] = Field(default_factory=lambda: ["none", "structured", "magnitude"])  # teacher only
    prune_amount: list[float] = Field(default_factory=lambda: [0.25, 0.5])
    finetune_steps: list[int] = Field(default_factory=lambda: [0, 20])
    quantize: list[str] = Field(default_factory=lambda: ["none", "int8"])

    def validate_config(self) -> None:
        for key in (
            "student",
            "student_layers",
            "student_hidden",
            "prune",
            "prune_amount",
            "finetune_steps",
            "quantize",
        ):
            check(len(getattr(self, key)) >= 1, key, "needs at least one choice")
        check(all(v >= 1 for v in self.student_layers), "student_layers", "must be >= 1")
        check(all(v >= 8 for v in self.student_hidden), "student_hidden", "must be >= 8")
        check_range(self.temperature, "temperature", 1e-3, 100.0)
        check_range(self.alpha, "alpha", 0.0, 1.0)
        check(set(self.prune) <= {"none", "structured", "magnitude"}, "prune", "choices: none, structured, magnitude")
        check(all(0 < a < 1 for a in self.prune_amount), "prune_amount", "each must be in (0, 1)")
        check(all(s >= 0 for s in self.finetune_steps), "finetune_steps", "must be >= 0")
        check(set(self.quantize) <= {"none", "int8", "fp16", "bf16"}, "quantize", "choices: none, int8, fp16, bf16")


class CompressionSearchConfig(ConfigModel):
    """The Tune run: trials, concurrency, ASHA, initial points, resources."""

    num_samples: int = 8
    max_concurrent: int = 2
    seed: int = 0
    grace_period: int = 2  # ASHA: reports before a trial may be stopped (>= a trial's reports: never stopped)
    reduction_factor: int = 2
    cpus_per_trial: float = 1.0  # the trial process (evaluation, latency); Train workers ask for train.cpus_per_worker
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)  # first trials, e.g. known baselines
    name: str | None = None
    storage_path: str | None = None  # None: LMREC_HOME/ray_results

    def validate_config(self) -> None:
        check(self.num_samples >= 1, "num_samples", "must be >= 1")
        check(self.max_concurrent >= 1, "max_concurrent", "must be >= 1")
        check(self.grace_period >= 1, "grace_period", "must be >= 1")
        check(self.reduction_factor >= 2, "reduction_factor", "must be >= 2")
        check(self.cpus_per_trial > 0, "cpus_per_trial", "must be > 0")


def _tracking_default() -> TrackingConfig:
    return TrackingConfig(experiment="lmrec-compression", alias="candidate")


def _latency_default() -> LatencyConfig:
    return LatencyConfig(iters=20, rounds=2, warmup=2, threads=1, max_seconds=10.0)


class TuneCompressionConfig(ConfigModel):
    """Everything `jobs/tune_compression.py` needs."""

    teacher: str = (
        "models:/lmrec-seqrec@champion"  # registry URI (models:/name/3, models:/name@alias), runs:/ or a folder
    )
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(strategy="none", batch_size=64, lr=2e-3, max_failures=0)
    )
    distill_steps: int = 200  # a student's training budget
    teacher_topk: int = 0  # > 0: KL over the teacher's top-k items (memory); 0 = full catalog
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig(protocols=["full"], ks=[10], every_epochs=1))
    latency: LatencyConfig = Field(default_factory=_latency_default)
    space: CompressionSpace = Field(default_factory=CompressionSpace)
    search: CompressionSearchConfig = Field(default_factory=CompressionSearchConfig)
    tracking: TrackingConfig = Field(default_factory=_tracking_default)
    calibration_rows: int = 256  # rows scoring heads/channels for structured pruning (0 = weight magnitude)
    out: str | None = None  # summary JSON

    def validate_config(self) -> None:
        check(bool(self.teacher), "teacher", "must name a model version, run artifact or folder")
        check(self.distill_steps >= 1, "distill_steps", "must be >= 1")
        check(self.teacher_topk >= 0, "teacher_topk", "must be >= 0")
        check(
            "full" in self.eval.protocols and 10 in self.eval.ks,
            "eval",
            "needs protocol 'full' and k 10 (the objective)",
        )
        check(self.eval.every_epochs >= 1, "eval.every_epochs", "must be >= 1: ASHA stops trials on validation NDCG")
        check(self.calibration_rows >= 0, "calibration_rows", "must be >= 0")
        check(
            not (self.train.strategy == "fsdp" and "magnitude" in self.space.prune),
            "train.strategy",
            "magnitude-pruned fine-tunes re-mask full weights: use strategy 'ddp' or 'none' with prune 'magnitude'",
        )

    def objectives(self) -> tuple[list[str], list[str]]:
        """(metric keys, modes) of the multi-objective search."""
        keys = [NDCG_KEY] + [latency_key(b) for b in self.latency.batch_sizes] + [SIZE_KEY]
        return keys, ["max"] + ["min"] * (len(keys) - 1)


def spec_from_params(params: dict[str, Any], cfg: TuneCompressionConfig, name: str) -> CompressionSpec:
    """The `CompressionSpec` a sampled point stands for (raises ConfigError for invalid points)."""
    student = bool(params.get("student", False))
    prune = "none" if student else params.get("prune", "none")
    data = {
        "name": name,
        "student_layers": params.get("student_layers") if student else None,
        "student_hidden": params.get("student_hidden") if student else None,
        "student_heads": params.get("student_heads") if student else None,
        "distill_steps": cfg.distill_steps if student else 0,
        "temperature": params.get("temperature", 2.0),
        "alpha": params.get("alpha", 0.5),
        "teacher_topk": cfg.teacher_topk,
        "prune": prune,
        "prune_amount": params.get("prune_amount", 0.0) if prune != "none" else 0.0,
        "finetune_steps": params.get("finetune_steps", 0) if prune != "none" else 0,
        "quantize": params.get("quantize", "none"),
    }
    return from_dict(CompressionSpec, data, "trial")
