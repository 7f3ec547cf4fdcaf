"""The feedback log as N shards (Ray-free): which shard owns a slate, and the views merged across shards.

A slate belongs to the shard its `request_id` hashes to (`owner_shard`: CRC-32 of the UTF-8 id,
mod N, the same in every process and Python run). Rankers split each impression batch by owner
(`split_by_owner`, inside `ShardedFeedbackClient`), the Ingress sends `/feedback` to the owner, and a
restarted shard takes back only the slates it owns (`FeedbackStore.recover`), so each slate's join
and dedupe live on exactly one shard. Exploration statistics and stats are per shard; the
rankers' view is their sum (`merge_policy_states`, `merge_stats`).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence
from typing import Any, Protocol

FEEDBACK_LOG = "FeedbackLog"  # the deployment name of shard 0 (and of the log when it has one shard)


def owner_shard(request_id: str, shards: int) -> int:
    """The shard that owns slate `request_id`: CRC-32 of its UTF-8 bytes mod `shards` (stable, unsalted)."""
    if shards == 1:
        return 0
    return zlib.crc32(request_id.encode("utf-8")) % shards


def shard_name(index: int) -> str:
    """Deployment name of shard `index`: `FeedbackLog`, then `FeedbackLog1`, `FeedbackLog2`, ..."""
    return FEEDBACK_LOG if index == 0 else f"{FEEDBACK_LOG}{index}"


def shard_tag(index: int, shards: int) -> str:
    """The tag in a shard's file names (`s1of4`); empty for a one-shard log, whose names stay as they were."""
    return "" if shards == 1 else f"s{index}of{shards}"


def split_by_owner(records: Sequence[dict[str, Any]], shards: int) -> list[list[dict[str, Any]]]:
    """Impression records grouped by owner shard (index i holds shard i's records, in their order)."""
    parts: list[list[dict[str, Any]]] = [[] for _ in range(shards)]
    if shards == 1:
        parts[0] = list(records)
        return parts
    for rec in records:
        parts[owner_shard(rec["request_id"], shards)].append(rec)
    return parts


def merge_policy_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The sum of the shards' exploration statistics (PolicyState dicts): each slate is counted by
    exactly one shard, so the sum is what one log holding every slate would report."""
    from lmrec.exploration.policies import PolicyState, merge_states

    if len(states) == 1:
        return dict(states[0])
    return merge_states(*(PolicyState.from_dict(s) for s in states)).to_dict()


STAT_COUNTS = ("impressions_logged", "impressions_pending", "feedback_events", "clicks")


def merge_stats(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One log's `stats()` from its shards': counts summed, CTR recomputed, `shards` each shard's own.

    `items_with_stats` is the largest shard's (an item shown by several shards is counted once
    per shard, so the sum would overstate it)."""
    if len(stats) == 1:
        return dict(stats[0])
    out: dict[str, Any] = {k: sum(int(s[k]) for s in stats) for k in STAT_COUNTS}
    out["ctr"] = out["clicks"] / out["feedback_events"] if out["feedback_events"] else 0.0
    out["items_with_stats"] = max(int(s["items_with_stats"]) for s in stats)
    out["log_dir"] = stats[0]["log_dir"]
    out["shards"] = [dict(s) for s in stats]
    return out


class FeedbackClient(Protocol):
    """What a ranker needs from the FeedbackLog: where impressions go, where statistics come from.
    One shard (its handle in a replica, a FeedbackLogCore in tests) or all of them (ShardedFeedbackClient)."""

    async def add_impressions(self, records: list[dict[str, Any]]) -> int: ...

    async def policy_state(self) -> dict[str, Any]: ...


class UnshippedError(Exception):
    """Some shards did not take their part of an impression batch; `unshipped` are exactly those records
    (the parts the other shards took are logged and must not be shipped again)."""

    def __init__(self, unshipped: list[dict[str, Any]], cause: BaseException) -> None:
        super().__init__(f"{len(unshipped)} impressions not shipped: {type(cause).__name__}: {cause}")
        self.unshipped = unshipped


class ShardedFeedbackClient:
    """RankerCore's feedback client over every shard: batches split by owner, statistics summed."""

    def __init__(self, shards: Sequence[FeedbackClient]) -> None:
        if not shards:
            raise ValueError("a feedback log has at least one shard")
        self.shards = list(shards)

    async def add_impressions(self, records: list[dict[str, Any]]) -> int:
        """Ship each shard its slates (concurrently); raise UnshippedError naming what did not arrive."""
        if len(self.shards) == 1:
            return await self.shards[0].add_impressions(records)
        parts = split_by_owner(records, len(self.shards))
        sent = [(shard, part) for shard, part in zip(self.shards, parts) if part]
        results = await asyncio.gather(*(shard.add_impressions(part) for shard, part in sent), return_exceptions=True)
        failed = [(part, r) for (_, part), r in zip(sent, results) if isinstance(r, BaseException)]
        if failed:
            raise UnshippedError([rec for part, _ in failed for rec in part], failed[0][1])
        return sum(int(r) for r in results)  # type: ignore[arg-type]  # no exceptions left

    async def policy_state(self) -> dict[str, Any]:
        """Every shard's statistics, summed; raises if any shard cannot answer (the caller keeps its last state)."""
        states = await asyncio.gather(*(shard.policy_state() for shard in self.shards))
        return merge_policy_states(states)
