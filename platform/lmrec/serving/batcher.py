"""Two-stage request batching for the ranker (Ray-free): micro-batches merged by one forward thread.

Stage one groups requests that arrive within `batch_wait_timeout_s` into micro-batches and
returns at once a future per request: in a replica that is `@serve.batch`
(`lmrec.serving.replica.ServeBatch`), elsewhere `SingleBatch` (each request its own micro-batch).
Stage two, `ForwardBatcher`, is one thread that runs the model: each forward takes every
micro-batch waiting (up to `max_rows` rows), so that while one forward runs the next one grows,
and forwards follow each other without waiting for the event loop.

Why not the forward inside the batch handler: Serve cuts the next batch while the last one runs
(the handler's concurrency semaphore is taken after the cut), so under load batches are cut by
the wait timeout (6 rows per forward at 64 clients on 2 CPU cores). Why a thread and not an
asyncio task around run_in_executor: the task's next turn waits behind every request callback
queued on the loop (docs/benchmarks.md, Serving).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")

# run(items) -> (one result or exception per item, wall time in ms of each forward it ran)
Run = Callable[[list[T]], tuple[list[Any], list[float]]]
Submit = Callable[[list[T]], list[asyncio.Future]]


class MicroBatcher(Protocol):
    """Stage one: `await batcher.submit(item)` gives the future of that item's result."""

    def submit(self, item: Any) -> Awaitable[asyncio.Future]: ...

    def configure(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        """Apply new batch settings live (user_config)."""


class SingleBatch:
    """Stage one without grouping: each request is a micro-batch of one (the forward thread still
    merges whatever is waiting). What RankerCore uses outside a Serve replica."""

    def __init__(self, submit: Submit) -> None:
        self._submit = submit

    async def submit(self, item: Any) -> asyncio.Future:
        return self._submit([item])[0]

    def configure(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        pass  # ForwardBatcher's max_rows still caps each forward


class ForwardBatcher(Generic[T]):
    """One daemon thread running `run` over merged micro-batches; results reach the futures on `loop`.

    `on_forward(rows, forward_ms)` runs on the event loop before the results are delivered
    (the app records the batch size and forward times there)."""

    def __init__(
        self,
        run: Run,
        max_rows: Callable[[], int],
        on_forward: Callable[[int, list[float]], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._run, self._max_rows, self._on_forward, self._loop = run, max_rows, on_forward, loop
        self._waiting: list[tuple[T, asyncio.Future]] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._forward_loop, name="lmrec-forward", daemon=True)
        self._thread.start()

    def submit(self, items: list[T]) -> list[asyncio.Future]:
        """On the event loop: queue one micro-batch; returns a future per item."""
        futures = [self._loop.create_future() for _ in items]
        with self._cv:
            self._waiting.extend(zip(items, futures))
            self._cv.notify()
        return futures

    def close(self) -> None:
        """Stop the thread once its current forward is done; what waits is not run."""
        with self._cv:
            self._closed = True
            self._cv.notify()

    def _forward_loop(self) -> None:
        while not self._loop.is_closed():
            with self._cv:
                while not self._waiting and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                take = min(len(self._waiting), self._max_rows())
                batch, self._waiting = self._waiting[:take], self._waiting[take:]
            try:
                results, forward_ms = self._run([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - fail these requests, keep the thread alive
                results, forward_ms = [exc] * len(batch), []
            try:
                self._loop.call_soon_threadsafe(self._deliver, [f for _, f in batch], results, forward_ms)
            except RuntimeError:  # the loop closed: the replica is shutting down
                return

    def _deliver(self, futures: list[asyncio.Future], results: list[Any], forward_ms: list[float]) -> None:
        """On the event loop: the forward's metrics, then the results to the waiting requests."""
        self._on_forward(len(futures), forward_ms)
        for fut, result in zip(futures, results):
            if fut.done():  # its client may have gone
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
