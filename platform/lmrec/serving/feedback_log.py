"""The FeedbackLog's work (Ray-free): group commit of feedback, impression flushing, statistics.

`GroupCommit` acknowledges a feedback event only after the batch holding it is durably
written: events that arrive within `commit_interval_s` share one fsynced file, and a failed
write acknowledges none of them (their dedupe marks are released, so a retry is accepted).
`FeedbackLogCore` is what each shard's `FeedbackLog` deployment (lmrec.serving.app) runs, and
what RankerCore's unit tests ship impressions to in-process; lmrec.serving.shards says which
shard owns which slate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmrec.serving import metrics as m
from lmrec.serving.config import ServeConfig
from lmrec.serving.metrics import MetricsSink

if TYPE_CHECKING:  # imports torch: a split topology's Ingress replicas never load it
    from lmrec.serving.feedback import FeedbackStore

log = logging.getLogger("ray.serve")  # a logger name only: in a replica, Serve writes it to the replica's log


class GroupCommit:
    """Batches rows for `commit(rows)` (run in a worker thread); `await write(row)` returns once
    the row is durable and raises if its batch could not be written."""

    def __init__(
        self,
        commit: Callable[[list[dict[str, Any]]], Any],
        release: Callable[[list[dict[str, Any]]], None],
        interval_s: float,
        on_commit: Callable[[list[dict[str, Any]]], None] = lambda rows: None,
    ) -> None:
        self._commit, self._release, self.interval_s, self._on_commit = commit, release, interval_s, on_commit
        self._pending: list[tuple[dict[str, Any], asyncio.Future]] = []
        self._wakeup = asyncio.Event()

    @property
    def pending(self) -> int:
        """Rows waiting for the next commit (not acknowledged)."""
        return len(self._pending)

    async def write(self, row: dict[str, Any]) -> None:
        fut: asyncio.Future = asyncio.get_event_loop().create_future()
        self._pending.append((row, fut))
        self._wakeup.set()
        await fut  # resolved once the batch holding this row is durable

    async def run(self) -> None:
        """The committer loop: one commit per window that saw a write."""
        loop = asyncio.get_event_loop()
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self.interval_s)  # group commit window
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            rows = [r for r, _ in batch]
            try:
                await loop.run_in_executor(None, self._commit, rows)
            except Exception as exc:  # noqa: BLE001 (write failed: the batch is not acknowledged)
                self._release(rows)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(True)
            self._on_commit(rows)


class FeedbackLogCore:
    """Owns the Parquet log; acknowledges feedback only after a durable (group-committed) write.

    Must be built on a running event loop: it starts the committer and the impression flusher.
    `shard` is its index among the log's `feedback.shards`: it is sent, and recovers, only its own slates."""

    def __init__(self, cfg: ServeConfig, metrics: MetricsSink, shard: int = 0) -> None:
        from lmrec.paths import lmrec_home
        from lmrec.serving.feedback import FeedbackStore

        self.cfg = cfg
        self.metrics = metrics
        root = Path(cfg.feedback.log_dir or (lmrec_home() / "feedback_logs"))
        self.store: FeedbackStore = FeedbackStore(cfg.feedback, root, shard)
        if root.exists():  # a restarted replica: make earlier slates joinable again
            recovered = self.store.recover()
            log.info("feedback log shard %d/%d recovered from %s: %s", shard, cfg.feedback.shards, root, recovered)
        self.commits = GroupCommit(self.store.commit, self.store.release, cfg.feedback.commit_interval_s, self._count)
        loop = asyncio.get_event_loop()
        self._tasks = [loop.create_task(self.commits.run()), loop.create_task(self._impression_flusher())]

    def _count(self, rows: list[dict[str, Any]]) -> None:
        self.metrics.record(m.CLICK_THROUGH_RATE, self.store.stats()["ctr"])
        for r in rows:
            self.metrics.record(m.FEEDBACK, 1, {"reward": str(int(r["reward"]))})

    async def add_impressions(self, records: list[dict[str, Any]]) -> int:
        return self.store.add_impressions(records)

    async def feedback(self, request_id: str, item_id: int, reward: int) -> dict[str, Any]:
        from lmrec.serving.runtime import RequestError

        deadline = time.monotonic() + self.cfg.feedback.impression_wait_s
        while not self.store.has_impression(request_id) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the ranker ships impressions in micro-batches
        try:
            row = self.store.event(request_id, item_id, reward)
        except RequestError as exc:
            return {"error": str(exc), "status": exc.status}
        try:
            await self.commits.write(row)
        except Exception as exc:  # noqa: BLE001 (write failed: not acknowledged)
            return {"error": f"feedback log unavailable: {exc}", "status": 503}
        return {
            "status": "recorded",
            "request_id": request_id,
            "item_id": item_id,
            "position": row["position"],
            "propensity": row["propensity"],
        }

    async def _impression_flusher(self) -> None:
        loop = asyncio.get_event_loop()
        while True:
            await asyncio.sleep(min(1.0, self.cfg.feedback.max_delay_s / 2))
            try:
                await loop.run_in_executor(None, self.store.flush_impressions)
            except Exception as exc:  # noqa: BLE001 (kept buffered; retried next tick)
                log.warning("impression flush failed: %s", exc)

    async def policy_state(self) -> dict[str, Any]:
        return self.store.state.to_dict()

    async def stats(self) -> dict[str, Any]:
        return self.store.stats()

    async def flush(self) -> dict[str, Any]:
        await asyncio.get_event_loop().run_in_executor(None, self.store.flush_impressions, True)
        return self.store.stats()

    def shutdown(self) -> None:
        """Write the buffered impressions now (the replica is stopping); log what is lost if that fails."""
        pending = self.store.impression_writer.pending
        try:
            self.store.flush_impressions(force=True)
        except Exception as exc:  # noqa: BLE001 (the process is stopping: report, do not raise)
            lost = self.store.impression_writer.pending
            log.error(
                "feedback log stopping: %d of %d buffered impressions could not be written to %s and are lost: %s",
                lost,
                pending,
                self.store.root / "impressions",
                exc,
            )
        if self.commits.pending:
            log.error(
                "feedback log stopping: %d feedback events not yet committed are lost (never acknowledged)",
                self.commits.pending,
            )

    def close(self) -> None:
        """Stop the committer and the flusher (an in-process owner's cleanup)."""
        for task in self._tasks:
            task.cancel()
