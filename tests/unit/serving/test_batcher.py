"""The ranker's forward thread (ForwardBatcher): micro-batches that wait while a forward runs are
merged into the next one (up to max_rows), results and errors reach each request's future, and
the forward's metrics callback runs on the event loop before the results are delivered."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from lmrec.serving.batcher import ForwardBatcher, SingleBatch


def test_waiting_micro_batches_are_merged_into_the_next_forward() -> None:
    release = threading.Event()
    forwards: list[list[int]] = []
    delivered: list[tuple[int, list[float], int]] = []

    def run(items: list[int]) -> tuple[list[Any], list[float]]:
        forwards.append(list(items))
        if len(forwards) == 1:
            release.wait(10)  # the first forward runs while more micro-batches arrive
        results: list[Any] = [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]
        return results, [1.5]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        thread = threading.get_ident()

        def on_forward(rows: int, ms: list[float]) -> None:
            delivered.append((rows, ms, threading.get_ident() == thread))

        batcher = ForwardBatcher(run, lambda: 4, on_forward, loop)
        first = batcher.submit([1])
        while not forwards:  # the thread took the first micro-batch
            await asyncio.sleep(0.01)
        later = [batcher.submit([2, 3]), batcher.submit([-4]), batcher.submit([5, 6])]
        release.set()
        assert await first[0] == 10
        flat = [f for batch in later for f in batch]
        results = await asyncio.gather(*flat, return_exceptions=True)
        assert results[:2] == [20, 30] and isinstance(results[2], ValueError) and results[3:] == [50, 60]
        assert forwards == [[1], [2, 3, -4, 5], [6]]  # merged up to max_rows = 4
        assert delivered == [(1, [1.5], True), (4, [1.5], True), (1, [1.5], True)]  # on the loop's thread
        batcher.close()

    asyncio.run(main())


def test_a_failing_forward_fails_its_requests_and_the_thread_keeps_going() -> None:
    def run(items: list[int]) -> tuple[list[Any], list[float]]:
        if 0 in items:
            raise RuntimeError("forward failed")
        return items, [0.1]

    async def main() -> None:
        batcher = ForwardBatcher(run, lambda: 8, lambda rows, ms: None, asyncio.get_running_loop())
        single = SingleBatch(batcher.submit)
        single.configure(16, 0.1)  # nothing to configure: each request is its own micro-batch
        with pytest.raises(RuntimeError, match="forward failed"):
            await (await single.submit(0))
        assert await (await single.submit(7)) == 7  # the thread survived
        batcher.close()

    asyncio.run(main())
