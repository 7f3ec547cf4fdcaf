"""Cold-start evaluation: full-ranking metrics split by whether the test target is a cold item,
and the content-only nearest-neighbour baseline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lmrec.data.sequences import SequenceData
from lmrec.evaluation.metrics import ranking_metrics
from lmrec.evaluation.protocols import Scorer, rank_batch
from lmrec.ids import PAD_ID


@torch.no_grad()
def target_ranks(scorer: Scorer, data: SequenceData, max_len: int, batch_size: int = 256) -> np.ndarray:
    """0-based full-catalog rank of every user's test target (history excluded)."""
    out = []
    for start in range(0, data.num_users, batch_size):
        users = np.arange(start, min(start + batch_size, data.num_users))
        out.append(rank_batch(scorer, data, users, "test", max_len, torch.device("cpu"), "full"))
    return np.concatenate(out) if out else np.zeros(0)


def split_metrics(ranks: np.ndarray, cold_target: np.ndarray, ks: Sequence[int] = (5, 10, 20, 50)) -> dict[str, float]:
    """`cold/...` and `warm/...` metrics (and user counts) from per-user ranks."""
    out: dict[str, float] = {}
    for name, mask in (("cold", cold_target), ("warm", ~cold_target), ("all", np.ones_like(cold_target))):
        out |= {f"{name}/{k}": v for k, v in ranking_metrics(ranks[mask], ks).items()}
        out[f"{name}/users"] = float(mask.sum())
    return out


def content_knn_scorer(vectors: np.ndarray) -> Scorer:
    """Content-only nearest neighbours of the history: score = cosine(item, mean of the history's items).

    `vectors` (V, D): one content vector per item_idx (row 0 = padding, ignored)."""
    v = torch.from_numpy(np.asarray(vectors, np.float32))
    v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-12)
    v[PAD_ID] = 0

    def score(inputs: torch.Tensor) -> torch.Tensor:
        profile = v[inputs].sum(1)  # pads add the zero row
        return profile @ v.T

    return score


def content_vectors(text: np.ndarray | None, attrs: np.ndarray | None, num_attributes: int) -> np.ndarray:
    """(V, D) content of each item: its unit text embedding and its unit attribute multi-hot, side by side."""
    parts = []
    if text is not None:
        parts.append(np.asarray(text, np.float32))
    if attrs is not None:
        hot = np.zeros((attrs.shape[0], num_attributes + 1), np.float32)
        rows = np.repeat(np.arange(attrs.shape[0]), attrs.shape[1])
        hot[rows, attrs.reshape(-1)] = 1.0
        hot[:, 0] = 0.0
        hot /= np.maximum(np.linalg.norm(hot, axis=1, keepdims=True), 1e-12)
        parts.append(hot)
    if not parts:
        raise ValueError("content_vectors: no text and no attributes")
    return np.concatenate(parts, axis=1)
