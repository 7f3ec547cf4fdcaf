"""Typed config of the item-embedding stage (`lmrec embed`, jobs/embed_items.py)."""

from __future__ import annotations

from pydantic import Field

from lmrec.config import ConfigModel, check
from lmrec.data.config import DataConfig
from lmrec.tracking.config import TrackingConfig


class EmbedConfig(ConfigModel):
    """Which encoder embeds item text, and how the Ray Data actor pool runs it."""

    encoder: str = "wordllama"  # or hf:<hub name or local path>
    pooling: str = "auto"  # auto: mean for encoders, last token for decoder-only LLMs
    max_length: int = 128  # tokens per item text (hf encoders)
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    batch_size: int = 256  # texts per Ray Data batch
    concurrency: int = 1  # encoder actors in the pool
    num_gpus: float = 0.0  # per actor; > 0 places the actors on GPUs
    num_cpus: float = 1.0  # per actor

    def validate_config(self) -> None:
        check(
            self.encoder == "wordllama" or (self.encoder.startswith("hf:") and len(self.encoder) > 3),
            "encoder",
            f"must be 'wordllama' or 'hf:<hub name or local path>', got {self.encoder!r}",
        )
        check(self.pooling in ("auto", "mean", "last"), "pooling", "must be auto, mean or last")
        check(
            self.dtype in ("auto", "float32", "bfloat16", "float16"),
            "dtype",
            "must be auto, float32, bfloat16 or float16",
        )
        check(self.max_length >= 1, "max_length", "must be >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.concurrency >= 1, "concurrency", "must be >= 1")
        check(self.num_gpus >= 0, "num_gpus", "must be >= 0")
        check(self.num_cpus > 0, "num_cpus", "must be > 0")


class EmbedJobConfig(ConfigModel):
    """Prepare a dataset (with its item content), embed its item text, log the result to MLflow."""

    data: DataConfig = Field(default_factory=DataConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    tracking: TrackingConfig = Field(
        default_factory=lambda: TrackingConfig(experiment="lmrec-embeddings", register=False)
    )
    force: bool = False  # recompute even when the cache holds this (encoder, text) pair
