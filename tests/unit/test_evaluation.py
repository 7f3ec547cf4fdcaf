"""Metric functions against hand-computed cases; the two protocols' masking and sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmrec.data.sequences import SequenceData
from lmrec.evaluation.metrics import metric_sums, ranking_metrics, sums_to_metrics
from lmrec.evaluation.protocols import evaluate_scorer, full_ranks, popularity_scorer, sample_negatives, sampled_ranks


def test_hand_computed_metrics() -> None:
    ranks = np.array([0, 1, 9, 10, 50])  # 0-based
    m = ranking_metrics(ranks, ks=(1, 10))
    assert m["hr@1"] == pytest.approx(1 / 5)
    assert m["hr@10"] == pytest.approx(3 / 5)  # ranks 0, 1, 9 are in the top 10
    assert m["ndcg@1"] == pytest.approx(1 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 51) / 5)


def test_sums_are_additive_across_shards() -> None:
    ranks = np.random.default_rng(0).integers(0, 100, 1000)
    whole = ranking_metrics(ranks)
    parts = metric_sums(ranks[:300]) + metric_sums(ranks[300:])
    assert sums_to_metrics(parts, 1000) == pytest.approx(whole)


def test_full_ranking_excludes_history_and_counts_ties_half() -> None:
    # catalog of 5 items (+ pad column 0)
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    target = torch.tensor([3])
    assert full_ranks(scores, target, [np.array([], dtype=np.int64)]).item() == 2
    assert full_ranks(scores, target, [np.array([1])]).item() == 1  # item 1 was seen: excluded
    assert full_ranks(scores, target, [np.array([1, 2])]).item() == 0
    # target itself in history is still ranked (its own score is kept)
    assert full_ranks(scores, target, [np.array([3])]).item() == 2
    flat = torch.zeros(1, 6)
    assert full_ranks(flat, target, [np.array([], dtype=np.int64)]).item() == 2  # 4 ties -> middle


def test_sampled_negatives_exclude_history_and_target() -> None:
    rng = np.random.default_rng(0)
    hist = [np.array([1, 2, 3]), np.array([10])]
    negs = sample_negatives(20, hist, np.array([4, 11]), 10, rng)
    assert negs.shape == (2, 10)
    assert not set(negs[0]) & {1, 2, 3, 4} and not set(negs[1]) & {10, 11}
    assert all(len(set(row)) == 10 for row in negs)
    with pytest.raises(ValueError):
        sample_negatives(5, [np.array([1, 2, 3])], np.array([4]), 3, rng)
    scores = torch.arange(21, dtype=torch.float32)[None].repeat(2, 1)
    r = sampled_ranks(scores, torch.tensor([4, 11]), torch.from_numpy(negs))
    assert r[0].item() == int((negs[0] > 4).sum()) and r[1].item() == int((negs[1] > 11).sum())


def _toy_data() -> SequenceData:
    seqs = [[1, 2, 3, 4], [2, 3, 4, 5], [1, 1, 2, 6]]
    items = np.array([i for s in seqs for i in s], dtype=np.int32)
    offsets = np.cumsum([0] + [len(s) for s in seqs])
    n = len(items)
    return SequenceData(
        items, offsets, np.ones(n, np.float32), np.arange(n), np.arange(3), 6, {"item_ids": list(range(6))}
    )


def test_popularity_baseline_end_to_end() -> None:
    data = _toy_data()
    counts = data.train_item_counts()
    assert counts.tolist() == [0, 3, 2, 1, 0, 0, 0]  # train parts: [1,2], [2,3], [1,1]
    out = evaluate_scorer(popularity_scorer(data), data, "test", max_len=5, ks=(1, 3), protocols=["full"])
    # user0: hist [1,2,3], target 4 (count 0); remaining 4,5,6 all 0 -> 2 ties -> rank 1
    # user1: hist [2,3,4], target 5; remaining 1(3),5,6 -> rank 1 + ties(1)//2 = 1
    # user2: hist [1,1,2], target 6; remaining 3(1),4,5,6 -> rank 1 + 2//2 = 2
    assert out["full/hr@1"] == 0.0
    assert out["full/hr@3"] == pytest.approx(1.0)
    assert out["full/mrr"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)
