"""Ranking metrics and evaluation protocols (full ranking, sampled).

The protocols (torch) load on first use (PEP 562): configs that import `lmrec.evaluation.config`
(the exploration search's, in every Tune trial process) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lmrec.evaluation.metrics import DEFAULT_KS, metric_names, ranking_metrics

if TYPE_CHECKING:
    from lmrec.evaluation.protocols import evaluate_scorer, model_scorer, popularity_scorer

_PROTOCOLS = ("evaluate_scorer", "model_scorer", "popularity_scorer")

__all__ = ["DEFAULT_KS", "metric_names", "ranking_metrics", "evaluate_scorer", "model_scorer", "popularity_scorer"]


def __getattr__(name: str) -> Any:
    if name in _PROTOCOLS:
        value = getattr(importlib.import_module("lmrec.evaluation.protocols"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'lmrec.evaluation' has no attribute {name!r}")
