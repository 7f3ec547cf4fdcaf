"""Which config class validates the YAMLs of each `jobs/configs/<job>/` folder."""

from __future__ import annotations

import importlib
from typing import Any

CONFIG_CLASSES: dict[str, str] = {
    "train": "lmrec.training.config:TrainJobConfig",
    "tune_exploration": "lmrec.tuning.exploration:TuneExplorationConfig",
    "benchmark_compression": "lmrec.benchmarks.compression:BenchmarkConfig",
    "tune_compression": "lmrec.tuning.compression:TuneCompressionConfig",
    "pipeline": "lmrec.pipeline:PipelineConfig",
}


def config_class(job: str) -> Any:
    """The dataclass for `jobs/configs/<job>/*.yaml`."""
    if job not in CONFIG_CLASSES:
        raise KeyError(f"no config class registered for jobs/configs/{job}/")
    module, name = CONFIG_CLASSES[job].split(":")
    return getattr(importlib.import_module(module), name)
