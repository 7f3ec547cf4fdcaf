"""The cold-start protocol: the items first seen latest leave training entirely, stay test targets,
and the benchmark ranks them with popularity, content nearest neighbours, ID-only and fused models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmrec.data.cold_start import cold_items, first_seen, write_cold_start
from lmrec.data.config import DataConfig
from lmrec.data.prepare import prepare_dataset
from lmrec.data.sequences import SequenceData, train_examples
from lmrec.evaluation.cold_start import content_knn_scorer, split_metrics, target_ranks
from lmrec.paths import data_dir

ML100K = data_dir() / "movielens" / "ml-100k" / "u.data"
needs_ml100k = pytest.mark.skipif(not ML100K.exists(), reason="MovieLens-100k is not under LMREC_DATA_DIR")


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ML100K.exists():
        pytest.skip("MovieLens-100k is not under LMREC_DATA_DIR")
    return prepare_dataset(
        DataConfig(dataset="ml-100k"), cache_root=tmp_path_factory.mktemp("prep"), engine="local"
    ).path


@needs_ml100k
def test_cold_items_are_first_seen_latest_and_leave_training(ml100k: Path, tmp_path: Path) -> None:
    data = SequenceData.load(ml100k)
    cold, order = cold_items(data, 0.15)
    assert order == "timestamp" and len(cold) == round(0.15 * data.num_items)
    first, _ = first_seen(data)
    warm = np.setdiff1d(np.arange(1, data.num_items + 1), cold)
    assert first[cold].min() >= first[warm].max()  # every cold item arrives after every warm one
    out = write_cold_start(data, cold, ml100k, tmp_path / "cold", {"fraction": 0.15})
    cs = SequenceData.load(out, with_meta=False)
    inputs, targets = train_examples(cs, 50)
    assert not np.isin(inputs, cold).any() and not np.isin(targets, cold).any()
    assert (cs.train_item_counts()[cold] == 0).all()
    manifest = cs.manifest["cold_start"]
    test_targets = np.array([cs.target(u, "test") for u in range(cs.num_users)])
    assert manifest["test_targets_cold"] == int(np.isin(test_targets, cold).sum()) > 0
    assert manifest["users_dropped"] + cs.num_users == data.num_users


def test_content_neighbours_rank_an_item_like_the_history_first() -> None:
    vectors = np.array([[0, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)  # items 1..4
    data = SequenceData(
        items=np.array([1, 3, 2, 4], np.int32),  # one user: train [1, 3], valid 2 (unused), test 4
        offsets=np.array([0, 4]),
        ratings=np.ones(4, np.float32),
        ts=np.arange(4),
        user_ids=np.array([1]),
        num_items=4,
        manifest={},
    )
    ranks = target_ranks(content_knn_scorer(vectors), data, max_len=5)
    assert ranks.tolist() == [0]  # item 4 is nearest to the history's mean (items 1, 3, 2 seen)
    m = split_metrics(ranks, np.array([True]))
    assert m["cold/ndcg@10"] == 1.0 and m["warm/users"] == 0.0


@needs_ml100k
def test_cold_start_benchmark_on_ml100k_small(tmp_path: Path, lmrec_home: Path) -> None:
    """The whole protocol at a small size: wordllama text (in-process) and genres, 3 epochs, one seed."""
    from lmrec.benchmarks.cold_start import main

    out = tmp_path / "cold.json"
    args = ["--datasets", "ml-100k", "--seeds", "0", "--epochs", "3", "--latency-rounds", "2", "--threads", "1"]
    assert main([*args, "--embed-engine", "local", "--batch-size", "64", "--lr", "0.003", "--out", str(out)]) == 0
    import json

    r = json.loads(out.read_text())["datasets"]["ml-100k"]
    assert r["content"] == {"text": "wordllama", "attributes": True}
    assert r["baselines"]["popularity"]["cold/ndcg@10"] == 0.0  # cold items have no training interactions
    rd = r["rounds"][0]
    assert rd["fused"]["parameters"] > rd["id"]["parameters"]
    assert rd["fused"]["metrics"]["cold/users"] == r["cold_start"]["test_targets_cold"] > 0
    # content gives cold items a place in the ranking that their untrained IDs do not
    assert rd["fused"]["metrics"]["cold/hr@50"] > rd["id"]["metrics"]["cold/hr@50"]
    assert set(r["summary"]) == {"fused_vs_knn_cold", "fused_vs_popularity_cold", "fused_vs_id_warm"}
