"""The feedback log as N shards (Ray-free): which shard owns a slate, and the views merged across shards.

A slate belongs to the shard its `request_id` hashes to (`owner_shard`: CRC-32 of the UTF-8 id,
mod N, the same in every process and Python run). Rankers buffer and ship slates per owner
(`ImpressionShipper`), the Ingress sends `/feedback` to the owner, and a
restarted shard takes back only the slates it owns (`FeedbackStore.recover`), so each slate's join
and dedupe live on exactly one shard. Exploration statistics and stats are per shard; the
rankers' view is their sum (`merge_policy_states`, `merge_stats`).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from typing import Any, Protocol

log = logging.getLogger("ray.serve")  # a logger name only: in a replica, Serve writes it to the replica's log
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
    """One shard as a ranker reaches it: its deployment handle in a replica, a FeedbackLogCore in tests."""

    async def add_impressions(self, records: list[dict[str, Any]]) -> int: ...

    async def policy_state(self) -> dict[str, Any]: ...


class ImpressionShipper:
    """A ranker's side of the log: its slates buffered per owner shard, each shard shipped by its own
    loop, so a dead or restarting shard holds back only the slates it owns; statistics summed.

    A failed call re-queues its batch ahead of newer slates. The loops set no timeout: a batch that
    a slow shard may still be writing is never sent twice. Only `ship(timeout_s)` at shutdown
    gives up, and what is left is reported lost."""

    def __init__(self, shards: Sequence[FeedbackClient]) -> None:
        if not shards:
            raise ValueError("a feedback log has at least one shard")
        self.shards = list(shards)
        self.buffers: list[list[dict[str, Any]]] = [[] for _ in self.shards]
        self._busy = [asyncio.Lock() for _ in self.shards]  # one call per shard at a time: order kept
        self._in_flight = [0] * len(self.shards)

    @property
    def pending(self) -> int:
        """Slates not yet taken by their shard (buffered or in a call that has not returned)."""
        return sum(len(b) for b in self.buffers) + sum(self._in_flight)

    def add(self, record: dict[str, Any]) -> None:
        self.buffers[owner_shard(record["request_id"], len(self.shards))].append(record)

    async def ship_shard(self, shard: int) -> bool:
        """Send shard `shard` its buffered slates; on failure (or cancellation) they stay buffered."""
        async with self._busy[shard]:
            if not self.buffers[shard]:
                return True
            batch, self.buffers[shard] = self.buffers[shard], []
            self._in_flight[shard] = len(batch)
            try:
                await self.shards[shard].add_impressions(batch)
                return True
            except asyncio.CancelledError:  # a shutdown's timeout: keep them counted as not shipped
                self.buffers[shard] = batch + self.buffers[shard]
                raise
            except Exception as exc:  # noqa: BLE001 (re-queue, keeping the order)
                self.buffers[shard] = batch + self.buffers[shard]
                n = len(self.buffers[shard])
                log.warning("impression shipping to shard %d failed (%d buffered): %s", shard, n, exc)
                return False
            finally:
                self._in_flight[shard] = 0

    async def ship(self, timeout_s: float | None = None) -> bool:
        """Ship every shard its slates now (concurrently); True if all arrived within `timeout_s`."""
        try:
            sent = await asyncio.wait_for(
                asyncio.gather(*(self.ship_shard(i) for i in range(len(self.shards)))), timeout_s
            )
        except asyncio.TimeoutError:
            return False
        return all(sent)

    async def run(self, interval_s: float) -> None:
        """The ship loops, one per shard, every `interval_s` (a failed shard waits 0.5 s more: it may be restarting)."""

        async def loop(shard: int) -> None:
            while True:
                await asyncio.sleep(interval_s)
                if not await self.ship_shard(shard):
                    await asyncio.sleep(0.5)

        await asyncio.gather(*(loop(i) for i in range(len(self.shards))))

    async def policy_state(self) -> dict[str, Any]:
        """Every shard's statistics, summed; raises if any shard cannot answer (the caller keeps its last state)."""
        return merge_policy_states(await asyncio.gather(*(shard.policy_state() for shard in self.shards)))
