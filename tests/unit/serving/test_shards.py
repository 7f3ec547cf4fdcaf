"""The sharded feedback log without Ray: the owner hash, slates shipped per owner shard (a dead shard
holds back only its own), statistics summed across shards, and a restarted shard taking back only
its own slates from a log that every shard writes into."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from lmrec.exploration.logs import join_rewards, read_logs
from lmrec.exploration.policies import PolicyState
from lmrec.serving.config import FeedbackConfig
from lmrec.serving.feedback import FeedbackStore
from lmrec.serving.runtime import RequestError
from lmrec.serving.shards import (
    ImpressionShipper,
    merge_policy_states,
    merge_stats,
    owner_shard,
    shard_name,
    split_by_owner,
)


def _impression(rid: str, slate: list[int]) -> dict[str, Any]:
    cand = slate + [900, 901]
    return {
        "request_id": rid,
        "candidates": cand,
        "scores": [float(10 - i) for i in range(len(cand))],
        "slate": slate,
        "propensities": [0.9] * len(slate),
        "policy": "epsilon_greedy",
        "policy_params": {"type": "epsilon_greedy", "epsilon": 0.1},
        "user_id": "7",
        "model_version": "m/1",
    }


def test_the_owner_is_a_stable_unsalted_hash_that_spreads_ids() -> None:
    ids = [f"{i:032x}" for i in range(4000)]
    for n in (1, 2, 4):
        owners = [owner_shard(r, n) for r in ids]
        assert owners == [zlib.crc32(r.encode()) % n for r in ids]  # the documented function, nothing else
        counts = Counter(owners)
        assert set(counts) == set(range(n)) and min(counts.values()) > 0.9 * len(ids) / n
    # another interpreter (another PYTHONHASHSEED) maps the same ids to the same shards
    code = "from lmrec.serving.shards import owner_shard; print([owner_shard(f'{i:032x}', 4) for i in range(50)])"
    env_out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert env_out.stdout.strip() == str([owner_shard(r, 4) for r in ids[:50]])
    assert owner_shard("é-ünïcode", 3) == zlib.crc32("é-ünïcode".encode()) % 3
    assert [shard_name(i) for i in range(3)] == ["FeedbackLog", "FeedbackLog1", "FeedbackLog2"]


def test_a_batch_is_split_by_owner_keeping_order() -> None:
    recs = [_impression(f"r{i}", [5]) for i in range(40)]
    parts = split_by_owner(recs, 3)
    assert sorted(r["request_id"] for p in parts for r in p) == sorted(r["request_id"] for r in recs)
    for i, part in enumerate(parts):
        assert all(owner_shard(r["request_id"], 3) == i for r in part)
        assert part == [r for r in recs if owner_shard(r["request_id"], 3) == i]  # order kept
    assert split_by_owner(recs, 1) == [recs]


def test_merged_policy_states_equal_one_log_of_every_slate() -> None:
    rng = np.random.default_rng(0)
    whole = PolicyState()
    parts = [PolicyState() for _ in range(3)]
    for _ in range(200):
        items, rewards = rng.choice(50, 4, replace=False), rng.integers(0, 2, 4)
        expected = rng.uniform(0, 1, 4)
        whole.update(items, rewards, expected)
        parts[int(rng.integers(3))].update(items, rewards, expected)
    merged = PolicyState.from_dict(merge_policy_states([p.to_dict() for p in parts]))
    assert merged == whole
    assert merge_policy_states([parts[0].to_dict()]) == parts[0].to_dict()
    assert PolicyState.from_dict(merge_policy_states([PolicyState().to_dict()] * 2)) == PolicyState()


def test_merged_stats_sum_the_counts_and_recompute_ctr() -> None:
    a = {"impressions_logged": 10, "impressions_pending": 1, "feedback_events": 4, "clicks": 1, "ctr": 0.25}
    b = {"impressions_logged": 6, "impressions_pending": 0, "feedback_events": 0, "clicks": 0, "ctr": 0.0}
    a |= {"items_with_stats": 7, "log_dir": "/x"}
    b |= {"items_with_stats": 9, "log_dir": "/x"}
    m = merge_stats([a, b])
    assert m["impressions_logged"] == 16 and m["feedback_events"] == 4 and m["clicks"] == 1 and m["ctr"] == 0.25
    assert m["items_with_stats"] == 9 and m["shards"] == [a, b] and m["log_dir"] == "/x"
    assert merge_stats([a]) == a


class _Shard:
    """A shard in memory: takes batches into `got`, fails while `down`, hangs while `stuck` (a shard
    whose replica is gone: Serve queues the call until a new one runs)."""

    def __init__(self, state: PolicyState) -> None:
        self.got: list[dict[str, Any]] = []
        self.down = False
        self.stuck = asyncio.Event()
        self.stuck.set()
        self.state = state

    async def add_impressions(self, records: list[dict[str, Any]]) -> int:
        await self.stuck.wait()
        if self.down:
            raise ConnectionError("shard restarting")
        self.got += records
        return len(records)

    async def policy_state(self) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("shard restarting")
        return self.state.to_dict()


def test_the_shipper_ships_each_shard_its_slates_and_a_dead_shard_holds_back_only_its_own() -> None:
    s0, s1 = _Shard(PolicyState([1, 2], [3, 1], [1, 0])), _Shard(PolicyState([2, 3], [2, 5], [2, 1]))
    shipper = ImpressionShipper([s0, s1])
    recs = [_impression(f"r{i}", [5]) for i in range(30)]
    mine0, mine1 = split_by_owner(recs, 2)

    async def scenario() -> None:
        for r in recs[:15]:
            shipper.add(r)
        assert shipper.pending == 15 and await shipper.ship() and shipper.pending == 0
        state = PolicyState.from_dict(await shipper.policy_state())
        assert state == PolicyState([1, 2, 3], [3, 3, 5], [1, 2, 1])
        s1.down = True  # fails: its slates go back to its buffer, in order
        for r in recs[15:]:
            shipper.add(r)
        assert not await shipper.ship()
        assert s0.got == mine0 and shipper.buffers[1] == [r for r in mine1 if r in recs[15:]]
        with pytest.raises(ConnectionError):
            await shipper.policy_state()  # no partial sum: the ranker keeps its last state
        s1.down = False
        s1.stuck.clear()  # gone: the call waits, and only shard 1 waits with it
        task = asyncio.create_task(shipper.run(0.01))
        shipper.add(more := _impression("late-0", [5]))
        extra = [_impression(f"late-{i}", [5]) for i in range(1, 12)]
        for r in extra:
            shipper.add(r)
        await asyncio.sleep(0.2)
        late0 = [r for r in [more, *extra] if owner_shard(r["request_id"], 2) == 0]
        assert late0 and s0.got == mine0 + late0 and shipper.pending == len(recs) + 12 - len(s0.got) - len(s1.got)
        assert not await shipper.ship(timeout_s=0.1)  # what a stopping ranker does: gives up, counts the rest
        s1.stuck.set()
        await asyncio.sleep(0.2)
        assert s1.got == mine1 + [r for r in [more, *extra] if r not in late0] and shipper.pending == 0
        task.cancel()

    asyncio.run(scenario())


def test_each_shard_recovers_only_its_own_slates_from_the_shared_log(tmp_path: Path) -> None:
    cfg = FeedbackConfig(batch_size=100, shards=2)
    stores = [FeedbackStore(cfg, tmp_path, shard) for shard in range(2)]
    recs = [_impression(f"req-{i}", [5, 6, 7]) for i in range(40)]
    parts = split_by_owner(recs, 2)
    for store, part in zip(stores, parts):
        store.add_impressions(part)
        store.commit([store.event(part[0]["request_id"], 6, 1)])
        store.flush_impressions(force=True)
    files = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    assert len(files) == 4 and sum("-s0of2-" in f for f in files) == 2 and sum("-s1of2-" in f for f in files) == 2
    # readers see one log: every slate once, both shards' clicks joined
    joined = join_rewards(read_logs(tmp_path / "impressions"), pq.read_table(tmp_path / "feedback"))
    assert joined.num_rows == 40
    clicked = {r: rw for r, rw in zip(joined.column("request_id").to_pylist(), joined.column("rewards").to_pylist())}
    assert clicked[parts[0][0]["request_id"]] == [0.0, 1.0, 0.0] and clicked[parts[1][0]["request_id"]][1] == 1.0

    for shard in range(2):
        again = FeedbackStore(cfg, tmp_path, shard)
        assert again.recover() == {"impressions": len(parts[shard]), "feedback_events": 1}
        assert all(again.has_impression(r["request_id"]) for r in parts[shard])
        assert not any(again.has_impression(r["request_id"]) for r in parts[1 - shard])
        with pytest.raises(RequestError) as e:
            again.event(parts[shard][0]["request_id"], 6, 1)  # its acknowledged click: still deduped
        assert e.value.status == 409
        assert again.state == stores[shard].state  # its statistics, not the other shard's
    # the one-shard log reads every file, tagged or not (a log that was sharded, or never was)
    single = FeedbackStore(FeedbackConfig(batch_size=100), tmp_path)
    assert single.recover() == {"impressions": 40, "feedback_events": 2}
    assert single.state == stores[0].state.merge(stores[1].state)
    with pytest.raises(ValueError, match="not one of"):
        FeedbackStore(cfg, tmp_path, 2)
