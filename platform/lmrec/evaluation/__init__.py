"""Ranking metrics and evaluation protocols (full ranking, sampled)."""

from lmrec.evaluation.metrics import DEFAULT_KS, metric_names, ranking_metrics
from lmrec.evaluation.protocols import evaluate_scorer, model_scorer, popularity_scorer

__all__ = ["DEFAULT_KS", "metric_names", "ranking_metrics", "evaluate_scorer", "model_scorer", "popularity_scorer"]
