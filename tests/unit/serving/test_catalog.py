"""A fused model's catalog growing while it serves, without Ray: the version store (atomic, exclusive,
reloadable), validation errors that leave the catalog unchanged, a new item ranked by a LoadedModel of
an in-process-trained fused artifact (compiled forward), other replicas following, a reloaded model
re-applying the additions, and RankerCore's add_items/status."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lmrec.config import from_dict, load_config
from lmrec.data.config import DataConfig, SyntheticConfig
from lmrec.data.prepare import prepare_local
from lmrec.data.synthetic import _World, generate
from lmrec.models.artifacts import load_model_dir, save_model_dir
from lmrec.serving.catalog import add_items, catch_up
from lmrec.serving.catalog_store import CatalogItem, CatalogStore, CatalogVersion, VersionConflict
from lmrec.serving.config import ServeConfig
from lmrec.serving.feedback_log import FeedbackLogCore
from lmrec.serving.metrics import InMemoryMetrics
from lmrec.serving.ranker import RankerCore
from lmrec.serving.runtime import LoadedModel, RequestError, load_model
from lmrec.training.config import TrainJobConfig
from lmrec.training.context import LocalContext
from lmrec.training.loop import run_training
from lmrec.training.steps import EXPORT_DIR

SYN = SyntheticConfig(num_users=300, num_items=120, num_clusters=6, mean_seq_len=14, zipf_alpha=0.5, seed=3)


# ---- the store


def _version(v: int, ids: list[int], dim: int = 4) -> CatalogVersion:
    emb = np.random.default_rng(v).normal(size=(len(ids), dim)).astype(np.float32)
    return CatalogVersion(v, [CatalogItem(i, f"item {i}", ("a",)) for i in ids], "wordllama", emb)


def test_store_publishes_immutable_versions_and_reads_them_back(tmp_path: Path) -> None:
    store = CatalogStore(tmp_path / "m")
    assert store.versions() == [] and store.latest() == 0 and store.read_after(0) == []
    first = store.publish(_version(1, [7, 8]))
    store.publish(_version(2, [9]))
    (tmp_path / "m" / "notes.txt").write_text("ignored")
    assert store.versions() == [1, 2]
    again = CatalogStore(tmp_path / "m").read(1)  # a fresh reader (another replica) sees the same bytes
    assert [i.item_id for i in again.items] == [7, 8] and again.items[0].attributes == ("a",)
    assert again.encoder == "wordllama" and np.array_equal(again.embeddings, first.embeddings)
    assert [v.version for v in store.read_after(1)] == [2]
    with pytest.raises(VersionConflict):
        store.publish(_version(2, [10]))  # taken: never overwritten
    assert [i.item_id for i in store.read(2).items] == [9]
    assert not list((tmp_path / "m").glob(".tmp-*"))  # temporaries are gone, published or not


def test_concurrent_writers_of_one_version_one_wins(tmp_path: Path) -> None:
    store = CatalogStore(tmp_path / "m")
    results: list[str] = []
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        barrier.wait()
        try:
            store.publish(_version(1, [100 + i]))
            results.append("ok")
        except VersionConflict:
            results.append("conflict")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 7 + ["ok"] and store.versions() == [1]


# ---- a fused model trained in-process, served by load_model


@pytest.fixture(scope="module")
def fused_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fused (gate, attributes only) model trained in-process on synthetic data, exported."""
    tmp = tmp_path_factory.mktemp("fused")
    prepared = prepare_local(DataConfig(dataset="synthetic", synthetic=SYN), generate(SYN), tmp / "prep").path
    cfg = load_config(
        TrainJobConfig,
        None,
        [
            "train.strategy=none",
            "train.epochs=2",
            "train.batch_size=32",
            "train.lr=0.003",
            "eval.protocols=[full]",
            "train.log_every_steps=1000",
            "model.content.fusion=gate",
            "model.content.attributes=true",
            "model.content.id_dropout=0.3",
        ],
    )
    cfg.prepared_path = str(prepared)
    run_training(cfg, LocalContext(tmp / "run"))
    return next((tmp / "run").rglob(EXPORT_DIR))


def _cfg(folder: Path, tmp: Path, **extra: Any) -> ServeConfig:
    return from_dict(ServeConfig, {"model_uri": str(folder), "catalog": {"dir": str(tmp / "catalogs")}, **extra})


def _cluster_items(folder: Path) -> dict[int, list[int]]:
    """cluster -> the model's item ids in it (synthetic item i+1 is in cluster_of[i])."""
    vocab = set(load_model_dir(folder)[1])
    clusters = _World(SYN).cluster_of
    out: dict[int, list[int]] = {}
    for i, k in enumerate(clusters):
        if i + 1 in vocab:
            out.setdefault(int(k), []).append(i + 1)
    return out


def _rank_of(loaded: LoadedModel, item: int, history: list[int]) -> int:
    cand, _ = loaded.rank([loaded.to_idx(history)], loaded.num_items - len(set(history)), [True])
    return int(np.flatnonzero(loaded.to_ids(cand[0]) == item)[0])


def test_a_new_item_is_ranked_by_its_content_and_other_replicas_follow(fused_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(fused_dir, tmp_path)
    a, b = load_model(str(fused_dir), cfg), load_model(str(fused_dir), cfg)  # two replicas
    assert a.catalog is not None and a.catalog.version == 0 and a.forward == "torchscript"
    base_n = a.num_items
    clusters = _cluster_items(fused_dir)
    k, other = sorted(clusters, key=lambda c: -len(clusters[c]))[:2]
    t0 = time.perf_counter()
    grown, body = add_items(a, [{"item_id": 90001, "text": None, "attributes": [f"cluster:{k}"]}], cfg)
    seconds = time.perf_counter() - t0
    print(f"\ncatalog update to rankable on this replica: {seconds:.2f} s ({grown.forward})")
    assert body == {
        "catalog_version": 1,
        "added": 1,
        "catalog_items": 1,
        "num_items": base_n + 1,
        "model_version": a.version,
    }
    assert grown.forward == "torchscript" and grown.num_items == base_n + 1 and a.num_items == base_n  # a: unchanged
    # ranked high for a history of its cluster, low for another cluster's; a history may hold it
    near, far = _rank_of(grown, 90001, clusters[k][:8]), _rank_of(grown, 90001, clusters[other][:8])
    print(f"new item's rank: {near} for a cluster-{k} history, {far} for a cluster-{other} one")
    assert near < 10 < far
    assert grown.rank([grown.to_idx([90001, clusters[k][0]])], 5, [True])[0].shape == (1, 5)
    # the other replica applies the stored version (no re-encoding), with the same scores
    assert b.catalog.store.latest() == 1
    b2 = catch_up(b)
    assert b2 is not None and b2.catalog.version == 1 and catch_up(b2) is None
    h = [grown.to_idx(clusters[k][:5])]
    assert np.allclose(grown.rank(h, 10, [True])[1], b2.rank(h, 10, [True])[1], atol=1e-5)
    # a model (re)loaded later re-applies the additions
    again = load_model(str(fused_dir), cfg)
    assert again.catalog.version == 1 and 90001 in again.item_ids.tolist()


def test_bad_updates_are_refused_and_leave_the_catalog_unchanged(fused_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(fused_dir, tmp_path, catalog={"dir": str(tmp_path / "c"), "max_items_per_request": 3})
    loaded = load_model(str(fused_dir), cfg)
    own = int(loaded.item_ids[0])
    cases = [
        ([], 422, "must not be empty"),
        ([{"item_id": 1000 + i, "attributes": ["cluster:0"]} for i in range(4)], 422, "the limit is 3"),
        ([{"item_id": 5, "attributes": ["cluster:0"]}] * 2, 422, "more than once"),
        ([{"item_id": own, "attributes": ["cluster:0"]}], 409, "already in the catalog"),
        ([{"item_id": 2000, "attributes": ["cluster:0", "colour:mauve"]}], 422, "unknown attribute"),
        ([{"item_id": 2001, "text": "a red shoe"}], 422, "no content this model uses"),  # no text encoder
        ([{"item_id": 2002, "text": " ", "attributes": []}], 422, "no content this model uses"),
        ([{"item_id": 2**63, "attributes": ["cluster:0"]}], 422, "64-bit"),
    ]
    for items, status, message in cases:
        with pytest.raises(RequestError, match=message) as err:
            add_items(loaded, items, cfg)
        assert err.value.status == status
    assert loaded.catalog.store.latest() == 0 and loaded.num_items == len(loaded.catalog.base_ids)
    grown, _ = add_items(loaded, [{"item_id": 3000, "attributes": ["cluster:1"]}], cfg)
    with pytest.raises(RequestError, match="already in the catalog") as err:  # an added id is taken too
        add_items(grown, [{"item_id": 3000, "attributes": ["cluster:2"]}], cfg)
    # a replica that has not applied version 1 yet sees it before validating
    with pytest.raises(RequestError, match=r"\[3000\] are already"):
        add_items(loaded, [{"item_id": 3000, "attributes": ["cluster:2"]}], cfg)
    two, body = add_items(loaded, [{"item_id": 3001, "attributes": ["cluster:2"]}], cfg)
    assert body["catalog_version"] == 2 and {3000, 3001} <= set(two.item_ids.tolist())


def test_id_only_model_refuses_with_409(tmp_path: Path) -> None:
    from lmrec.models import SeqRecModel, build_config, init_weights_

    model = SeqRecModel(build_config("tiny", 10, dropout=0.0))
    init_weights_(model, 0)
    folder = save_model_dir(tmp_path / "id", model.config, model.state_dict(), list(range(1, 11)), {})
    cfg = _cfg(folder, tmp_path, forward="eager")
    loaded = load_model(str(folder), cfg)
    assert loaded.catalog is None
    with pytest.raises(RequestError, match="ID-only") as err:
        add_items(loaded, [{"item_id": 99, "text": "x", "attributes": []}], cfg)
    assert err.value.status == 409 and not (tmp_path / "catalogs").exists()


def test_ranker_core_adds_items_reports_the_catalog_and_follows_other_writers(fused_dir: Path, tmp_path: Path) -> None:
    args = {
        "model_uri": str(fused_dir),
        "alias_poll_s": 0,
        "forward": "eager",
        "catalog": {"dir": str(tmp_path / "catalogs"), "poll_s": 0.1},
        "feedback": {"log_dir": str(tmp_path / "feedback")},
    }

    async def run() -> None:
        log = FeedbackLogCore(from_dict(ServeConfig, args), InMemoryMetrics())
        core = RankerCore(args, [log], InMemoryMetrics(), "r0")
        try:
            st = await core.status()
            assert st["catalog_version"] == 0 and st["catalog_items"] == 0
            bad = await core.add_items({"items": [{"item_id": 1, "text": None, "attributes": ["cluster:0"]}]})
            assert bad["status"] == 409 and (await core.status())["catalog_version"] == 0
            ok = await core.add_items({"items": [{"item_id": 777, "text": None, "attributes": ["cluster:0"]}]})
            assert ok["catalog_version"] == 1 and ok["applied_s"] >= 0
            out = await core.recommend({"history": [777], "k": 3, "explore": False})
            assert len(out["items"]) == 3 and 777 not in out["items"]
            # another writer (replica) publishes version 2: this one follows within a poll
            other = load_model(str(fused_dir), from_dict(ServeConfig, {**args, "forward": "eager"}))
            add_items(other, [{"item_id": 778, "text": None, "attributes": ["cluster:1"]}], other_cfg())
            deadline = time.time() + 10
            while (await core.status())["catalog_version"] != 2:
                assert time.time() < deadline, "the poller never applied version 2"
                await asyncio.sleep(0.05)
            assert (await core.status())["catalog_items"] == 2 and 778 in core.loaded.item_ids.tolist()
        finally:
            core.close()
            log.close()

    def other_cfg() -> ServeConfig:
        return from_dict(ServeConfig, args)

    asyncio.run(run())


def test_a_stored_version_is_applied_by_the_content_this_model_uses(fused_dir: Path, tmp_path: Path) -> None:
    """A version with text from another encoder than the model's is applied by its attributes alone
    (this model has no text encoder), so the grown table does not depend on who wrote it."""
    cfg = _cfg(fused_dir, tmp_path)
    loaded = load_model(str(fused_dir), cfg)
    store = loaded.catalog.store
    store.publish(
        CatalogVersion(1, [CatalogItem(5001, "blue lamp", ("cluster:2",)), CatalogItem(5002, "no attrs")], "hf:x", None)
    )
    grown = catch_up(loaded)
    assert grown is not None and grown.catalog.version == 1
    assert 5001 in grown.item_ids.tolist() and 5002 not in grown.item_ids.tolist()  # nothing to represent it by
    assert torch.isfinite(torch.from_numpy(grown.rank([grown.to_idx([5001])], 5, [True])[1])).all()


def test_a_text_model_encodes_new_items_with_its_own_encoder(tmp_path: Path, lmrec_home: Path) -> None:
    """A fused model trained on wordllama text only: a new item is encoded with wordllama as in training,
    and ranked by its text; an item without text has no content this model uses."""
    from lmrec.content.config import EmbedConfig
    from lmrec.content.embed import embed_items
    from lmrec.data.synthetic import _COLOURS, _THINGS

    prepared = prepare_local(DataConfig(dataset="synthetic", synthetic=SYN), generate(SYN), tmp_path / "prep").path
    emb = embed_items(prepared / "items.parquet", EmbedConfig(encoder="wordllama"), engine="local")
    cfg = load_config(
        TrainJobConfig,
        None,
        [
            "train.strategy=none",
            "train.epochs=2",
            "train.batch_size=32",
            "train.lr=0.003",
            "eval.every_epochs=0",
            "eval.protocols=[full]",
            "train.log_every_steps=1000",
            "model.content.fusion=add",
            "model.content.text=wordllama",
            "model.content.id_dropout=0.3",
        ],
    )
    cfg.prepared_path, cfg.text_embeddings_path = str(prepared), str(emb.path)
    run_training(cfg, LocalContext(tmp_path / "run"))
    folder = next((tmp_path / "run").rglob(EXPORT_DIR))
    serve = _cfg(folder, tmp_path)
    loaded = load_model(str(folder), serve)
    assert loaded.catalog.text_encoder == "wordllama"
    with pytest.raises(RequestError, match="no content this model uses"):
        add_items(loaded, [{"item_id": 90002, "text": None, "attributes": []}], serve)
    clusters = _cluster_items(folder)
    k, other = sorted(clusters, key=lambda c: -len(clusters[c]))[:2]
    text = f"{_COLOURS[k % 10]} {_THINGS[k // 10 % 10]} number 90002"  # how cluster k's items read
    grown, body = add_items(loaded, [{"item_id": 90002, "text": text}], serve)
    assert body["added"] == 1 and grown.num_items == loaded.num_items + 1
    near, far = _rank_of(grown, 90002, clusters[k][:8]), _rank_of(grown, 90002, clusters[other][:8])
    print(f"\ntext-only new item's rank: {near} for a cluster-{k} history, {far} for a cluster-{other} one")
    assert near < far
