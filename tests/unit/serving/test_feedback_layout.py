"""The serving feedback store writes the on-disk layout that `lmrec.exploration.logs` defines."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from lmrec.exploration.logs import (
    FEEDBACK_DIR,
    FEEDBACK_EVENT_SCHEMA,
    IMPRESSIONS_DIR,
    join_rewards,
    list_log_files,
    log_file_path,
    read_logs,
)
from lmrec.serving.config import FeedbackConfig
from lmrec.serving.feedback import FeedbackStore


def test_store_writes_the_layout_that_logs_defines_and_the_join_reads_it(tmp_path: Path) -> None:
    store = FeedbackStore(FeedbackConfig(batch_size=100), tmp_path)
    store.add_impressions(
        [
            {
                "request_id": rid,
                "candidates": [5, 6, 7, 8],
                "scores": [1.0, 0.5, 0.0, -0.5],
                "slate": [5, 6],
                "propensities": [0.9, 0.8],
                "policy": "greedy",
                "policy_params": {"type": "greedy"},
            }
            for rid in ("r1", "r2")
        ]
    )
    event_file = store.commit([store.event("r1", 6, 1)])
    store.flush_impressions(force=True)

    assert event_file is not None
    day = event_file.parent.name.removeprefix("date=")
    assert event_file == log_file_path(tmp_path / FEEDBACK_DIR, day, event_file.name[5:-8])
    assert list_log_files(tmp_path / FEEDBACK_DIR) == [event_file]
    assert pq.read_schema(event_file).equals(FEEDBACK_EVENT_SCHEMA, check_metadata=True)
    impressions = list_log_files(tmp_path / IMPRESSIONS_DIR)
    assert len(impressions) == 1 and impressions[0].parent.name == f"date={day}"

    joined = join_rewards(read_logs(tmp_path / IMPRESSIONS_DIR), pq.read_table(event_file))
    rewards = dict(zip(joined["request_id"].to_pylist(), joined["rewards"].to_pylist()))
    assert rewards == {"r1": [0.0, 1.0], "r2": [0.0, 0.0]}
