"""Ranking metrics from the 0-based rank of each user's single held-out item.

With one relevant item per user: HR@K = 1[rank < K] (= Recall@K),
NDCG@K = 1[rank < K] / log2(rank + 2), MRR = 1 / (rank + 1) (untruncated).
Sums are kept separately from the count so ranks can be all-reduced across workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_KS = (5, 10, 20)


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    return [f"{m}@{k}" for k in ks for m in ("hr", "ndcg")] + ["mrr"]


def metric_sums(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> np.ndarray:
    """Per-metric sums over users, in `metric_names(ks)` order (float64)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = []
    for k in ks:
        hit = ranks < k
        out.append(hit.sum())
        out.append((hit / np.log2(ranks + 2.0)).sum())
    out.append((1.0 / (ranks + 1.0)).sum())
    return np.array(out, dtype=np.float64)


def sums_to_metrics(sums: Iterable[float], count: int, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    names = metric_names(ks)
    sums = list(sums)
    if count <= 0:
        return {n: 0.0 for n in names}
    return {n: float(s) / count for n, s in zip(names, sums)}


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@K, NDCG@K for each K, and MRR, averaged over users."""
    ranks = np.asarray(ranks)
    return sums_to_metrics(metric_sums(ranks, ks), len(ranks), ks)


def format_metrics(metrics: dict[str, object], prefix: str = "") -> str:
    """`protocol/metric@k  value` lines, sorted, for the metrics a run reports (non-numeric keys skipped)."""
    keys = sorted(k for k in metrics if "/" in k and isinstance(metrics[k], (int, float)))
    width = max((len(k) for k in keys), default=10)
    return "\n".join(f"{prefix}{k:<{width}}  {metrics[k]:.4f}" for k in keys)
