"""Ray Tune search over compression settings: quality vs CPU latency vs size, tracked in MLflow.

Modules: `config` (the job's dataclasses and metric keys), `space` (the Optuna
define-by-run space), `trial` (what runs inside a trial, and the Ray Train worker),
`front` (trial rows, Pareto front, table, plot), `driver` (`run_compression_search`,
the teacher and dataset checks).
"""

from lmrec.tuning.compression.config import (
    NDCG_KEY,
    SIZE_KEY,
    CompressionSearchConfig,
    CompressionSpace,
    TuneCompressionConfig,
)
from lmrec.tuning.compression.driver import run_compression_search
from lmrec.tuning.compression.front import CompressionSearchResult

__all__ = [
    "NDCG_KEY",
    "SIZE_KEY",
    "CompressionSearchConfig",
    "CompressionSearchResult",
    "CompressionSpace",
    "TuneCompressionConfig",
    "run_compression_search",
]
