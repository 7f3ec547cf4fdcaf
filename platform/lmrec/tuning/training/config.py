"""Configs of the training-hyperparameter search. Loading and validating them imports neither Ray nor Optuna."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lmrec.config import ConfigModel, check
from lmrec.data.config import DataConfig
from lmrec.evaluation.config import EvalConfig
from lmrec.models.sizes import ModelSpec
from lmrec.tracking.config import TrackingConfig
from lmrec.training.config import TrainConfig
from lmrec.tuning.search import check_range

NDCG_KEY = "valid/full/ndcg_at_10"  # MLflow-safe name of valid/full/ndcg@10, ASHA's and Optuna's metric


class TrainSpace(ConfigModel):
    """What the search samples: [low, high] ranges (lr on a log scale) or lists of choices.

    An empty list keeps the base config's value. `id_dropout` and `fusion` apply to fused models only.
    """

    lr: list[float] = Field(default_factory=lambda: [3e-4, 3e-3])
    dropout: list[float] = Field(default_factory=lambda: [0.1, 0.6])
    weight_decay: list[float] = Field(default_factory=lambda: [0.0])
    hidden_size: list[int] = Field(default_factory=list)
    num_layers: list[int] = Field(default_factory=list)
    batch_size: list[int] = Field(default_factory=list)
    id_dropout: list[float] = Field(default_factory=list)  # [low, high]
    fusion: list[str] = Field(default_factory=list)

    def validate_config(self) -> None:
        check_range(self.lr, "lr", 0.0, 1.0, low_open=True)
        check_range(self.dropout, "dropout", 0.0, 0.95)
        if self.id_dropout:
            check_range(self.id_dropout, "id_dropout", 0.0, 0.95)
        check(all(w >= 0 for w in self.weight_decay), "weight_decay", "must be >= 0")
        check(all(h >= 8 for h in self.hidden_size), "hidden_size", "each must be >= 8")
        check(all(n >= 1 for n in self.num_layers), "num_layers", "each must be >= 1")
        check(all(b >= 1 for b in self.batch_size), "batch_size", "each must be >= 1")
        check(set(self.fusion) <= {"add", "gate", "concat_proj"}, "fusion", "choices: add, gate, concat_proj")


class TrainSearchConfig(ConfigModel):
    """The Tune run: trials, concurrency, ASHA (one report per validated epoch), resources."""

    num_samples: int = 8
    max_concurrent: int = 2
    seed: int = 0
    grace_period: int = 2  # ASHA: validated epochs before a trial may be stopped
    reduction_factor: int = 2
    cpus_per_trial: float = 1.0  # each trial runs the training loop in its own process
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)  # first trials, e.g. a known config
    name: str | None = None
    storage_path: str | None = None  # None: LMREC_HOME/ray_results

    def validate_config(self) -> None:
        check(self.num_samples >= 1, "num_samples", "must be >= 1")
        check(self.max_concurrent >= 1, "max_concurrent", "must be >= 1")
        check(self.grace_period >= 1, "grace_period", "must be >= 1")
        check(self.reduction_factor >= 2, "reduction_factor", "must be >= 2")
        check(self.cpus_per_trial > 0, "cpus_per_trial", "must be > 0")


def _tracking_default() -> TrackingConfig:
    return TrackingConfig(experiment="lmrec-train-search", alias="candidate")


class TuneTrainConfig(ConfigModel):
    """Everything `jobs/tune_train.py` / `lmrec tune-train` need: a training job plus a space to search."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(strategy="none", epochs=20, max_failures=0))
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig(protocols=["full"], every_epochs=1))
    space: TrainSpace = Field(default_factory=TrainSpace)
    search: TrainSearchConfig = Field(default_factory=TrainSearchConfig)
    tracking: TrackingConfig = Field(default_factory=_tracking_default)
    out: str | None = None  # summary JSON

    def validate_config(self) -> None:
        check(
            "full" in self.eval.protocols and 10 in self.eval.ks,
            "eval",
            "needs protocol 'full' and k 10 (the objective)",
        )
        check(self.eval.every_epochs >= 1, "eval.every_epochs", "must be >= 1: ASHA stops trials on validation NDCG")
        check(
            self.train.num_workers == 1 and not self.train.use_gpu,
            "train.num_workers",
            "a search trial trains in its own process on CPU (strategy 'none'): use num_workers 1, use_gpu false",
        )
        fused = self.model.content.fused
        check(fused or not self.space.id_dropout, "space.id_dropout", "needs a fused model (model.content.fusion)")
        check(fused or not self.space.fusion, "space.fusion", "needs a fused model (model.content.fusion)")
