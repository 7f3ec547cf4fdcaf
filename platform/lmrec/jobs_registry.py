"""Which config class validates the YAMLs of each `jobs/configs/<job>/` folder, and where their schemas live."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

CONFIG_CLASSES: dict[str, str] = {
    "train": "lmrec.training.config:TrainJobConfig",
    "tune_exploration": "lmrec.tuning.exploration:TuneExplorationConfig",
    "benchmark_compression": "lmrec.benchmarks.compression:BenchmarkConfig",
    "tune_compression": "lmrec.tuning.compression:TuneCompressionConfig",
    "tune_train": "lmrec.tuning.training:TuneTrainConfig",
    "pipeline": "lmrec.pipeline:PipelineConfig",
    "embed_items": "lmrec.content.config:EmbedJobConfig",
}
# Configs with a JSON Schema but no jobs/configs folder: the serve app's `args` (`lmrec serve --config`).
OTHER_SCHEMAS: dict[str, str] = {"serve": "lmrec.serving.config:ServeConfig"}

SCHEMA_DIR = Path("jobs") / "schemas"  # relative to the repository root: <job>.schema.json


def config_class(job: str) -> Any:
    """The config class for `jobs/configs/<job>/*.yaml` (or a name of OTHER_SCHEMAS)."""
    target = CONFIG_CLASSES.get(job) or OTHER_SCHEMAS.get(job)
    if target is None:
        raise KeyError(
            f"no config class registered for {job!r}; known: {sorted(CONFIG_CLASSES) + sorted(OTHER_SCHEMAS)}"
        )
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def schema_file(job: str) -> Path:
    """Where the schema of `job` is committed, relative to the repository root."""
    return SCHEMA_DIR / f"{job}.schema.json"
