"""RankerCore in-process, without Ray: ranking, the cache, exploration, impressions shipped to a real
FeedbackStore (through FeedbackLogCore, or two as shards), hot-swap between two model folders,
policy loading, the shutdown flush and the metrics it records (into InMemoryMetrics)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from lmrec.config import from_dict
from lmrec.exploration.artifacts import policy_document
from lmrec.models import SeqRecModel, build_config, init_weights_
from lmrec.models.artifacts import save_model_dir
from lmrec.serving import metrics as m
from lmrec.serving.config import ServeConfig
from lmrec.serving.feedback_log import FeedbackLogCore
from lmrec.serving.metrics import InMemoryMetrics
from lmrec.serving.ranker import RankerCore
from lmrec.serving.runtime import LoadedModel, load_model
from lmrec.serving.shards import owner_shard

ITEMS = list(range(101, 141))  # the catalog: 40 item ids


def _model_dir(path: Path, seed: int) -> Path:
    """A tiny model folder (safetensors + JSON) whose weights depend on `seed`."""
    torch.manual_seed(seed)
    model = SeqRecModel(build_config("tiny", len(ITEMS), dropout=0.0))
    init_weights_(model, seed)
    return save_model_dir(path, model.config, model.state_dict(), ITEMS, {"dataset": "unit"})


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ranker-models")
    return _model_dir(root / "model-a", 1), _model_dir(root / "model-b", 2)


def _args(model: Path, tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model_uri": str(model),
        "forward": "eager",  # the compiled forward is tested in test_serving_core; here it only slows loads
        "last_position_only": False,
        "alias_poll_s": 0,
        "exploration": {"policy": {"type": "epsilon_greedy", "epsilon": 0.5}, "num_candidates": 20},
        "feedback": {"log_dir": str(tmp / "feedback"), "commit_interval_s": 0.01, "impression_ship_s": 0.05},
        **extra,
    }


def _expected(model: Path, history: list[int], k: int) -> tuple[list[int], np.ndarray]:
    """Greedy top-k (item ids, scores) for `history`, computed here from the model folder."""
    cfg = from_dict(ServeConfig, {"model_uri": str(model), "forward": "eager", "last_position_only": False})
    loaded = load_model(str(model), cfg)
    cand, scores = loaded.rank([loaded.to_idx(history)], k, [True])
    return loaded.to_ids(cand[0]).tolist(), scores[0]


def _run(
    args: dict[str, Any], scenario: Callable[[RankerCore, FeedbackLogCore, InMemoryMetrics], Awaitable[Any]]
) -> Any:
    """Build a FeedbackLogCore and a RankerCore shipping to it on one event loop; run `scenario`."""

    async def main() -> Any:
        cfg = from_dict(ServeConfig, args)
        log = FeedbackLogCore(cfg, InMemoryMetrics())
        sink = InMemoryMetrics()
        core = RankerCore(args, [log], sink, replica="r0")
        try:
            return await scenario(core, log, sink)
        finally:
            core.close()
            log.close()

    return asyncio.run(main())


async def _until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_ranks_greedily_caches_explores_and_counts(folders: tuple[Path, Path], tmp_path: Path) -> None:
    model_a, _ = folders
    history = [105, 106, 107]
    want_items, want_scores = _expected(model_a, history, 5)

    async def scenario(core: RankerCore, log: FeedbackLogCore, sink: InMemoryMetrics) -> None:
        body = {"history": history, "k": 5, "explore": False}
        first = await core.recommend(body)
        assert first["items"] == want_items and first["model_version"] == "model-a"
        np.testing.assert_allclose(first["scores"], want_scores, rtol=1e-5, atol=1e-5)
        assert first["propensities"] == [1.0] * 5 and first["policy"] == "greedy" and not first["explored"]
        assert not first["cached"] and not set(first["items"]) & set(history)  # exclude_seen by default
        again = await core.recommend(body)
        assert again["cached"] and again["items"] == first["items"] and again["request_id"] != first["request_id"]
        explored = [await core.recommend({**body, "explore": True}) for _ in range(40)]
        assert all(e["policy"] == "epsilon_greedy" and len(e["items"]) == 5 for e in explored)
        assert all(0 < p <= 1 for e in explored for p in e["propensities"])
        n_explored = sum(e["explored"] for e in explored)
        assert 0 < n_explored < 40  # epsilon 0.5
        # 4xx answers, before anything is ranked
        assert (await core.recommend({"history": history, "k": 41}))["status"] == 422  # above the catalog
        assert (await core.recommend({"history": [999], "k": 5}))["status"] == 422  # not in the catalog
        huge = await core.recommend({"history": [2**70], "k": 5})  # JSON integers are unbounded
        assert huge["status"] == 422 and "unknown item id" in huge["error"]
        assert (await core.recommend({"history": ITEMS[:38], "k": 5}))["status"] == 422  # 2 unseen items left
        no_users = await core.recommend({"user_id": 3, "k": 5})
        assert no_users["status"] == 404 and "histories are not available" in no_users["error"]
        status = await core.status()
        assert status["ready"] and status["model_version"] == "model-a" and status["replica"] == "r0"
        assert status["cache_entries"] == 1 and status["policy"]["type"] == "epsilon_greedy"

        core.flush_metrics()
        assert sink.value(m.CACHE_REQUESTS, result="miss") == 1 and sink.value(m.CACHE_REQUESTS, result="hit") == 41
        assert sink.value(m.SLATES, explored="false", policy="greedy") == 2
        assert sink.value(m.SLATES, explored="true", policy="epsilon_greedy") == n_explored
        assert sink.value(m.SLATES, explored="false", policy="epsilon_greedy") == 40 - n_explored
        assert sink.value(m.CACHE_HIT_RATIO, replica="r0") == pytest.approx(41 / 42)
        assert sink.value(m.EXPLORATION_RATE, replica="r0") == pytest.approx(n_explored / 42)
        assert sink.value(m.BATCH_SIZE) == [1]  # one forward: every other request was a cache hit
        assert len(sink.value(m.FORWARD_MS, replica="r0")) == 1
        assert sink.value(m.MODEL_VERSION, replica="r0", model="model-a") == 0.0  # a folder has no version number

    _run(_args(model_a, tmp_path), scenario)


def test_impressions_reach_the_feedback_store_and_statistics_come_back(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    model_a, _ = folders
    args = _args(model_a, tmp_path, exploration={"policy": {"type": "ucb"}, "num_candidates": 20, "stats_sync_s": 0.05})

    async def scenario(core: RankerCore, log: FeedbackLogCore, sink: InMemoryMetrics) -> None:
        served = [await core.recommend({"history": [101 + i, 120], "k": 3}) for i in range(6)]
        await _until(lambda: all(log.store.has_impression(s["request_id"]) for s in served))  # shipped in background
        ok = await log.feedback(served[0]["request_id"], served[0]["items"][1], 1)
        assert ok["status"] == "recorded" and ok["position"] == 1
        shown = np.array(sorted({i for s in served for i in s["items"]}))
        # the rankers' policy pulls the merged statistics: every shown item counted, the click too
        await _until(lambda: core.policies.policy.state.stats(shown)[0].sum() == 18)
        await _until(lambda: core.policies.policy.state.stats(np.array([served[0]["items"][1]]))[1][0] == 1)
        stats = await log.flush()
        assert stats["impressions_logged"] == 6 and stats["feedback_events"] == 1
        table = pq.read_table(tmp_path / "feedback" / "impressions")
        rows = {r["request_id"]: r for r in table.to_pylist()}
        assert set(rows) == {s["request_id"] for s in served}
        first = rows[served[0]["request_id"]]
        assert first["slate"] == served[0]["items"] and first["model_version"] == "model-a"
        assert first["policy"] == "ucb" and json.loads(first["policy_params"])["type"] == "ucb"

    _run(args, scenario)


def test_hot_swap_between_two_model_folders_under_load(folders: tuple[Path, Path], tmp_path: Path) -> None:
    model_a, model_b = folders
    history = [110, 111, 112, 113]
    expected = {"model-a": _expected(model_a, history, 5), "model-b": _expected(model_b, history, 5)}
    assert not np.allclose(expected["model-a"][1], expected["model-b"][1])  # the weights differ
    # no cache: every request goes through the forward thread, so batches can straddle the swap
    args = _args(model_a, tmp_path, cache={"enabled": False})

    async def scenario(core: RankerCore, log: FeedbackLogCore, sink: InMemoryMetrics) -> None:
        body = {"history": history, "k": 5, "explore": False}
        seen: list[dict[str, Any]] = []
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                seen.append(await core.recommend(body))

        clients = [asyncio.create_task(client()) for _ in range(4)]
        await _until(lambda: len(seen) >= 8)
        await core.reconfigure({"model_uri": str(model_b)})  # loads in the background; A keeps serving
        await _until(lambda: core.loaded is not None and core.loaded.version == "model-b")
        count = len(seen)
        await _until(lambda: len(seen) >= count + 8)
        stop.set()
        await asyncio.gather(*clients)
        labels = [r["model_version"] for r in seen]
        assert all("error" not in r for r in seen) and set(labels) == {"model-a", "model-b"}
        assert labels == sorted(labels), "after the swap, every response comes from the new version"
        for r in seen:  # each response carries the scores of the model it is labelled with
            items, scores = expected[r["model_version"]]
            assert r["items"] == items
            np.testing.assert_allclose(r["scores"], scores, rtol=1e-5, atol=1e-5)
        assert (await core.status())["model_uri"] == str(model_b) and core.load_error is None
        assert sink.value(m.MODEL_VERSION, replica="r0", model="model-b") == 0.0
        assert sum(sink.value(m.BATCH_SIZE)) == len(seen)  # every request was one row of some forward

    _run(args, scenario)


def test_a_forward_batch_straddling_a_swap_ranks_each_row_with_its_own_model(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    model_a, model_b = folders
    cfg = from_dict(ServeConfig, {"model_uri": str(model_a), "forward": "eager", "last_position_only": False})
    a, b = load_model(str(model_a), cfg), load_model(str(model_b), cfg)
    h = a.to_idx([120, 121])
    rows: list[tuple[LoadedModel, np.ndarray, bool, int]] = [(a, h, True, 5), (b, h, True, 3), (a, h, False, 4)]

    async def scenario(core: RankerCore, log: FeedbackLogCore, sink: InMemoryMetrics) -> None:
        futures = core._forwards.submit(rows)  # one micro-batch holding rows of both versions
        results = await asyncio.gather(*futures)
        for (model, hist, exclude, n), (cand, scores) in zip(rows, results):
            want_cand, want_scores = model.rank([hist], n, [exclude])
            assert cand.tolist() == want_cand[0].tolist()
            np.testing.assert_allclose(scores, want_scores[0], rtol=1e-6)
        assert sink.value(m.BATCH_SIZE) == [3] and len(sink.value(m.FORWARD_MS, replica="r0")) == 2

    _run(_args(model_a, tmp_path), scenario)


def test_shutdown_ships_the_buffered_impressions(folders: tuple[Path, Path], tmp_path: Path) -> None:
    model_a, _ = folders
    args = _args(model_a, tmp_path)
    args["feedback"]["impression_ship_s"] = 3600  # nothing leaves before shutdown

    async def scenario(core: RankerCore, log: FeedbackLogCore, sink: InMemoryMetrics) -> None:
        served = [(await core.recommend({"history": [101 + i], "k": 2}))["request_id"] for i in range(5)]
        assert (await log.stats())["impressions_logged"] == 0
        await core.shutdown()
        assert (await log.flush())["impressions_logged"] == 5
        logged = pq.read_table(tmp_path / "feedback" / "impressions").column("request_id").to_pylist()
        assert sorted(logged) == sorted(served)
        slates = [sink.value(m.SLATES, explored=e, policy="epsilon_greedy") or 0 for e in ("true", "false")]
        assert sum(slates) == 5  # the last counts reached the metrics too

    _run(args, scenario)


def test_policy_from_a_file_and_live_reconfiguration(folders: tuple[Path, Path], tmp_path: Path) -> None:
    model_a, _ = folders
    policy_file = tmp_path / "policy.json"
    missing = tmp_path / "nowhere" / "policy.json"
    args = _args(model_a, tmp_path)
    args["exploration"]["policy_uri"] = str(missing)

    async def scenario(core: RankerCore, log: FeedbackLogCore, sink: InMemoryMetrics) -> None:
        st = await core.status()  # the policy file is missing: the inline policy serves, the error is reported
        assert st["policy"]["type"] == "epsilon_greedy" and "FileNotFoundError" in st["policy_error"]
        policy_file.write_text(json.dumps(policy_document({"type": "softmax", "temperature": 0.5})))
        await core.reconfigure({"policy_uri": str(policy_file), "max_batch_size": 8, "batch_wait_timeout_s": 0.01})
        await _until(lambda: core.policies.error is None)
        st = await core.status()
        assert st["policy"]["type"] == "softmax" and st["policy_uri"] == str(policy_file)
        assert st["batch"]["max_batch_size"] == 8 and st["batch"]["batch_wait_timeout_s"] == 0.01
        assert (await core.recommend({"history": [101], "k": 3}))["policy"] == "softmax"
        await core.reconfigure({"policy": {"type": "greedy"}})  # an inline policy wins over the URI
        st = await core.status()
        assert st["policy"]["type"] == "greedy" and st["policy_uri"] is None and st["policy_version"] is None

    _run(args, scenario)


class _Switch:
    """One shard as the ranker reaches it, that refuses batches while `down` (a restarting replica)."""

    def __init__(self, log: FeedbackLogCore) -> None:
        self.log, self.down = log, False

    async def add_impressions(self, records: list[dict[str, Any]]) -> int:
        if self.down:
            raise ConnectionError("shard restarting")
        return await self.log.add_impressions(records)

    async def policy_state(self) -> dict[str, Any]:
        return await self.log.policy_state()


def test_a_sharded_log_gets_each_slate_once_at_its_owner_and_statistics_are_summed(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    """Two shards in-process: each slate is logged by its owner shard only, also when one shard was
    down for a while (only its part is re-shipped), and the ranker learns from both shards' counts."""
    model_a, _ = folders
    exploration = {"policy": {"type": "ucb"}, "num_candidates": 20, "stats_sync_s": 0.05}
    args = _args(model_a, tmp_path, exploration=exploration)
    args["feedback"] |= {"shards": 2}

    async def main() -> None:
        cfg = from_dict(ServeConfig, args)
        logs = [FeedbackLogCore(cfg, InMemoryMetrics(), shard) for shard in range(2)]
        switches = [_Switch(log) for log in logs]
        core = RankerCore(args, switches, InMemoryMetrics(), replica="r0")
        try:
            switches[1].down = True
            served = [await core.recommend({"history": [101 + i, 120], "k": 3}) for i in range(12)]
            owners = [owner_shard(s["request_id"], 2) for s in served]
            assert set(owners) == {0, 1}
            mine = [s for s, o in zip(served, owners) if o == 0]
            await _until(lambda: all(logs[0].store.has_impression(s["request_id"]) for s in mine))
            await asyncio.sleep(0.2)  # failed ship rounds: shard 1's slates wait in the ranker
            later = await core.recommend({"history": [130, 131], "k": 3})  # served while shard 1 is down
            served.append(later)
            owners.append(owner_shard(later["request_id"], 2))
            if owners[-1] == 0:
                await _until(lambda: logs[0].store.has_impression(later["request_id"]))
            assert logs[1].store.stats()["impressions_logged"] == 0 and core.shipper.buffers[1]
            assert not core.shipper.buffers[0]  # shard 0 was not held back by shard 1
            switches[1].down = False
            for s, o in zip(served, owners):
                await _until(lambda s=s, o=o: logs[o].store.has_impression(s["request_id"]))
                assert not logs[1 - o].store.has_impression(s["request_id"])
                answer = await logs[o].feedback(s["request_id"], s["items"][0], 1)
                assert answer["status"] == "recorded" and answer["position"] == 0
            assert [log.store.stats()["impressions_logged"] for log in logs] == [owners.count(0), owners.count(1)]
            shown = np.array(sorted({i for s in served for i in s["items"]}))
            await _until(
                lambda: core.policies.policy.state.stats(shown)[0].sum() == 3 * len(served)
            )  # both shards' slates
            await _until(lambda: core.policies.policy.state.clicks.sum() == len(served))  # both shards' clicks
        finally:
            core.close()
            for log in logs:
                log.close()

    asyncio.run(main())
