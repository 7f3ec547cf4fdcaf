"""What a Serve replica injects into lmrec's Ray-free serving cores, and the retried handle call.

`RayMetrics` records into `ray.util.metrics`; `HandleFeedbackClient` reaches one FeedbackLog
shard through its deployment handle (a ranker holds one per shard); `ServeBatch` is `@serve.batch` as the ranker's first batching stage
(lmrec.serving.batcher); `call_upstream` retries a call while the replica behind it restarts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ray import serve

from lmrec.serving import metrics as m
from lmrec.serving.batcher import Submit

log = logging.getLogger("ray.serve")


class RayMetrics:
    """The metrics sink of a replica: a `ray.util.metrics` object per metric, made on first use."""

    def __init__(self) -> None:
        self._record: dict[str, Callable[..., None]] = {}  # metric name -> its inc / set / observe

    def record(self, metric: m.Metric, value: float, tags: Mapping[str, str] | None = None) -> None:
        record = self._record.get(metric.name)
        if record is None:
            from ray.util import metrics

            kw = {"boundaries": list(metric.boundaries)} if metric.kind == "Histogram" else {}
            made = getattr(metrics, metric.kind)(
                metric.name, description=metric.description, tag_keys=metric.tag_keys, **kw
            )
            record = getattr(made, {"Counter": "inc", "Gauge": "set", "Histogram": "observe"}[metric.kind])
            self._record[metric.name] = record
        record(value, tags=dict(tags) if tags else None)


class HandleFeedbackClient:
    """One FeedbackLog shard as a ranker reaches it: through the shard deployment's handle."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def add_impressions(self, records: list[dict[str, Any]]) -> int:
        return await self.handle.add_impressions.remote(records)

    async def policy_state(self) -> dict[str, Any]:
        return await self.handle.policy_state.remote()


class ServeBatch:
    """Stage one of the ranker's batching (lmrec.serving.batcher): `@serve.batch` micro-batches."""

    def __init__(self, submit: Submit) -> None:
        self._submit = submit

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def submit(self, items: list[Any]) -> list[asyncio.Future]:
        return self._submit(items)

    def configure(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.submit.set_max_batch_size(max_batch_size)
        self.submit.set_batch_wait_timeout_s(batch_wait_timeout_s)


def replica_parts(feedback_logs: list[Any]) -> tuple[list[HandleFeedbackClient], RayMetrics, str, type[ServeBatch]]:
    """What RankerCore gets in a replica: the FeedbackLog shards' handles (index i: shard i), Ray
    metrics, its replica id, `@serve.batch`."""
    replica = serve.get_replica_context().replica_id.unique_id
    return [HandleFeedbackClient(h) for h in feedback_logs], RayMetrics(), replica, ServeBatch


async def call_upstream(method: Any, retry_s: float, *args: Any) -> dict[str, Any]:
    """Call a deployment method; retry while its replica is dead or restarting, else a 503 body.

    Every call is safe to repeat: ranking is read-only, and the feedback log refuses a
    duplicate (request_id, item_id) only after it was durably written, so a retried
    acknowledged feedback answers 409 instead of writing twice (a retried catalog update
    whose first try was stored answers 409 too: its ids are in the catalog).
    """
    from ray.exceptions import RayActorError

    deadline = time.monotonic() + retry_s
    delay = 0.05
    while True:
        try:
            return await method.remote(*args)
        except RayActorError as exc:  # ActorDiedError / ActorUnavailableError: the replica is gone
            if time.monotonic() + delay > deadline:
                log.warning("upstream unavailable after %.0fs of retries: %s", retry_s, type(exc).__name__)
                return {"error": f"service temporarily unavailable ({type(exc).__name__}); retry later", "status": 503}
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
