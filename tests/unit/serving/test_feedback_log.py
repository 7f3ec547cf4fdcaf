"""The FeedbackLog's work in-process (FeedbackLogCore, GroupCommit) on a real FeedbackStore and real
files: group commit acknowledges only durable feedback, a failed write acknowledges nothing and can
be retried, feedback waits for its impression, and a stopping log says what it could not write."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from lmrec.config import from_dict
from lmrec.serving import metrics as m
from lmrec.serving.config import ServeConfig
from lmrec.serving.feedback_log import FeedbackLogCore
from lmrec.serving.metrics import InMemoryMetrics


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


def _run(tmp: Path, scenario: Callable[[FeedbackLogCore, InMemoryMetrics], Awaitable[Any]], **feedback: Any) -> Any:
    cfg = from_dict(ServeConfig, {"feedback": {"log_dir": str(tmp), "commit_interval_s": 0.05, **feedback}})

    async def main() -> Any:
        sink = InMemoryMetrics()
        log = FeedbackLogCore(cfg, sink)
        try:
            return await scenario(log, sink)
        finally:
            log.close()

    return asyncio.run(main())


def _written(root: Path) -> list[tuple[str, int]]:
    rows = []
    for f in sorted((root / "feedback").rglob("*.parquet")):
        t = pq.read_table(f, columns=["request_id", "item_id"])
        rows += list(zip(t.column("request_id").to_pylist(), t.column("item_id").to_pylist()))
    return rows


def test_concurrent_feedback_shares_one_durable_commit(tmp_path: Path) -> None:
    async def scenario(log: FeedbackLogCore, sink: InMemoryMetrics) -> None:
        await log.add_impressions([_impression(f"r{i}", [5, 6, 7]) for i in range(20)])

        async def send(i: int) -> dict[str, Any]:
            answer = await log.feedback(f"r{i}", 6, i % 2)
            # acknowledged => already in a file on disk
            assert (f"r{i}", 6) in _written(tmp_path), f"r{i} acknowledged before it was written"
            return answer

        answers = await asyncio.gather(*(send(i) for i in range(20)))
        assert all(a["status"] == "recorded" and a["position"] == 1 and a["propensity"] == 0.9 for a in answers)
        assert len(log.store.event_files) == 1  # one group-commit window, one fsynced file
        assert sorted(_written(tmp_path)) == sorted((f"r{i}", 6) for i in range(20))
        assert sink.value(m.FEEDBACK, reward="1") == 10 and sink.value(m.FEEDBACK, reward="0") == 10
        assert sink.value(m.CLICK_THROUGH_RATE) == 0.5
        again = await log.feedback("r0", 6, 1)  # a retried acknowledged feedback is not written twice
        assert again["status"] == 409 and "already recorded" in again["error"]
        shown = await log.feedback("r1", 99, 1)
        assert shown["status"] == 422 and "was not shown" in shown["error"]

    _run(tmp_path, scenario)


def test_a_failed_write_acknowledges_nothing_and_the_retry_is_accepted(tmp_path: Path) -> None:
    async def scenario(log: FeedbackLogCore, sink: InMemoryMetrics) -> None:
        await log.add_impressions([_impression("r1", [5, 6]), _impression("r2", [5, 6])])
        (tmp_path / "feedback").write_text("a file where the folder should be")  # every write fails
        failed = await asyncio.gather(log.feedback("r1", 5, 1), log.feedback("r2", 6, 0))
        assert [f["status"] for f in failed] == [503, 503] and "feedback log unavailable" in failed[0]["error"]
        assert log.store.events_written == 0 and sink.value(m.FEEDBACK, reward="1") is None
        (tmp_path / "feedback").unlink()
        retried = await asyncio.gather(log.feedback("r1", 5, 1), log.feedback("r2", 6, 0))
        assert [r["status"] for r in retried] == ["recorded", "recorded"]  # not 409: nothing was written
        assert sorted(_written(tmp_path)) == [("r1", 5), ("r2", 6)]

    _run(tmp_path, scenario)


def test_feedback_waits_for_its_impression(tmp_path: Path) -> None:
    async def scenario(log: FeedbackLogCore, sink: InMemoryMetrics) -> None:
        early = asyncio.create_task(log.feedback("late", 5, 1))  # the ranker has not shipped the slate yet
        await asyncio.sleep(0.1)
        await log.add_impressions([_impression("late", [5])])
        assert (await early)["status"] == "recorded"
        unknown = await log.feedback("never", 5, 1)  # 404 after impression_wait_s
        assert unknown["status"] == 404 and "unknown request_id" in unknown["error"]

    _run(tmp_path, scenario, impression_wait_s=0.3)


def test_a_stopping_log_writes_its_buffered_impressions(tmp_path: Path) -> None:
    async def scenario(log: FeedbackLogCore, sink: InMemoryMetrics) -> None:
        await log.add_impressions([_impression(f"r{i}", [5]) for i in range(3)])
        assert log.store.impression_writer.pending == 3
        log.shutdown()
        assert log.store.impression_writer.pending == 0
        assert sorted(pq.read_table(tmp_path / "impressions").column("request_id").to_pylist()) == ["r0", "r1", "r2"]

    _run(tmp_path, scenario, max_delay_s=3600)


def test_a_stopping_log_says_how_many_impressions_it_could_not_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(log: FeedbackLogCore, sink: InMemoryMetrics) -> None:
        await log.add_impressions([_impression(f"r{i}", [5]) for i in range(4)])
        shutil.rmtree(tmp_path / "impressions", ignore_errors=True)
        (tmp_path / "impressions").write_text("a file where the folder should be")  # the flush must fail
        with caplog.at_level(logging.ERROR, logger="ray.serve"):
            log.shutdown()  # logs instead of raising: the process is stopping anyway
        assert log.store.impression_writer.pending == 4

    _run(tmp_path, scenario, max_delay_s=3600)
    lost = [r for r in caplog.records if "could not be written" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.ERROR
    assert "4 of 4 buffered impressions" in lost[0].getMessage() and "impressions" in lost[0].getMessage()
