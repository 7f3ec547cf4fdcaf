"""Evaluation protocols: full ranking over the catalog and 100 sampled negatives.

Full ranking scores every item, removes the user's history (S3-Rec/BSARec/HSTU
protocol) and ranks the target; ties count half (a constant scorer gets the
middle rank, not the top). Sampled ranks the target among `num_negatives` items
drawn uniformly from those the user has not interacted with (SASRec paper).
Ray-free: the Ray Train loop calls `rank_batch` on its shard and all-reduces sums.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from lmrec.data.sequences import SequenceData, Split, eval_arrays, trim_padding
from lmrec.evaluation.metrics import DEFAULT_KS, metric_sums, sums_to_metrics
from lmrec.ids import PAD_ID

Scorer = Callable[[torch.Tensor], torch.Tensor]  # (B, L) inputs -> (B, num_items + 1) scores


def _pad_histories(histories: Sequence[np.ndarray]) -> torch.Tensor:
    width = max(1, max((len(h) for h in histories), default=1))
    out = np.full((len(histories), width), PAD_ID, dtype=np.int64)
    for i, h in enumerate(histories):
        out[i, : len(h)] = h
    return torch.from_numpy(out)


def full_ranks(scores: torch.Tensor, targets: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
    """0-based rank of each target among all items not in its history."""
    scores = scores.float().clone()
    tgt = scores.gather(1, targets[:, None]).squeeze(1)
    hist = _pad_histories(histories).to(scores.device)
    scores.scatter_(1, hist, float("-inf"))  # seen items (and pad column) can't outrank
    scores[:, PAD_ID] = float("-inf")
    greater = (scores > tgt[:, None]).sum(1)
    ties = (scores == tgt[:, None]).sum(1)
    ties = ties - (scores.gather(1, targets[:, None]).squeeze(1) == tgt).long()  # not the target itself
    return greater + ties // 2


def sample_negatives(
    num_items: int, histories: Sequence[np.ndarray], targets: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """(B, n) items drawn uniformly from 1..num_items excluding history and target."""
    out = np.empty((len(targets), n), dtype=np.int64)
    for i, (h, t) in enumerate(zip(histories, targets)):
        seen = set(h.tolist())
        seen.add(int(t))
        if num_items - len(seen) < n:
            raise ValueError(f"user {i}: only {num_items - len(seen)} unseen items, cannot sample {n} negatives")
        chosen: list[int] = []
        while len(chosen) < n:
            cand = rng.integers(1, num_items + 1, size=2 * (n - len(chosen)) + 8)
            for c in cand.tolist():
                if c not in seen:
                    seen.add(c)
                    chosen.append(c)
                    if len(chosen) == n:
                        break
        out[i] = chosen
    return out


def sampled_ranks(scores: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """0-based rank of the target among itself + negatives (ties count half)."""
    tgt = scores.gather(1, targets[:, None]).squeeze(1)
    neg = scores.gather(1, negatives)
    return (neg > tgt[:, None]).sum(1) + (neg == tgt[:, None]).sum(1) // 2


def rank_batch(
    scorer: Scorer,
    data: SequenceData,
    users: np.ndarray,
    split: Split,
    max_len: int,
    device: torch.device,
    protocol: str = "full",
    num_negatives: int = 100,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Ranks of `users`' `split` targets under `protocol` ("full" or "sampled")."""
    inputs, targets, _ = eval_arrays(data, split, max_len, users)
    (inputs,) = trim_padding(inputs)
    histories = [data.history(int(u), split) for u in users]
    scores = scorer(torch.from_numpy(inputs).to(device))
    t = torch.from_numpy(targets).to(scores.device)
    if protocol == "full":
        return full_ranks(scores, t, histories).cpu().numpy()
    negs = sample_negatives(data.num_items, histories, targets, num_negatives, rng or np.random.default_rng(0))
    return sampled_ranks(scores.float(), t, torch.from_numpy(negs).to(scores.device)).cpu().numpy()


@torch.no_grad()
def evaluate_scorer(
    scorer: Scorer,
    data: SequenceData,
    split: Split = "test",
    max_len: int = 50,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    protocols: Sequence[str] = ("full", "sampled"),
    num_negatives: int = 100,
    seed: int = 0,
    max_users: int | None = None,
) -> dict[str, float]:
    """Single-process evaluation: {"full/ndcg@10": ..., "sampled/hr@10": ..., "users": n}."""
    device = torch.device(device)
    users = np.arange(data.num_users if max_users is None else min(max_users, data.num_users))
    out: dict[str, float] = {"users": float(len(users))}
    for protocol in protocols:
        rng = np.random.default_rng(seed)
        sums = np.zeros(len(metric_sums(np.zeros(1), ks)))
        for start in range(0, len(users), batch_size):
            ranks = rank_batch(
                scorer, data, users[start : start + batch_size], split, max_len, device, protocol, num_negatives, rng
            )
            sums += metric_sums(ranks, ks)
        for name, value in sums_to_metrics(sums, len(users), ks).items():
            out[f"{protocol}/{name}"] = value
    return out


def popularity_scorer(data: SequenceData) -> Scorer:
    """Baseline: score = train-set popularity, the same for every user."""
    counts = torch.from_numpy(data.train_item_counts().astype(np.float32))

    def score(inputs: torch.Tensor) -> torch.Tensor:
        return counts.to(inputs.device).expand(inputs.shape[0], -1).clone()

    return score


def model_scorer(model: torch.nn.Module) -> Scorer:
    """Scores of a SeqRecModel's last position over the whole catalog."""

    def score(inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs)

    return score
