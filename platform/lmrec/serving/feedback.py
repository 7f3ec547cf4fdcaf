"""Impressions, feedback and exploration statistics behind the FeedbackLog deployment (Ray-free).

* Impressions (one row per served slate, FEEDBACK_SCHEMA) are buffered and written in
  batches by `FeedbackLogWriter` under `<root>/impressions/`.
* Feedback events are joined with their impression (slate position, propensity,
  policy, model version) and written under `<root>/feedback/` by `commit`, which returns
  only once the file is renamed into place and fsynced: the app acknowledges a
  feedback request with 2xx only after that, so an acknowledged record is never lost.
  Each event row is self-contained for off-policy evaluation;
  `lmrec.exploration.logs.join_rewards` fills impression rows from them.
* The merged PolicyState (impressions and clicks per item) is what ranker replicas pull.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

from lmrec.exploration.logs import FeedbackLogWriter, FeedbackRecord, write_table_atomic
from lmrec.exploration.policies import PolicyState, feedback_state
from lmrec.serving.config import FeedbackConfig
from lmrec.serving.runtime import RequestError

FEEDBACK_EVENT_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("position", pa.int16(), nullable=False),
        pa.field("propensity", pa.float64(), nullable=False),
        pa.field("policy", pa.string(), nullable=False),
        pa.field("model_version", pa.string()),
        pa.field("user_id", pa.string()),
    ],
    metadata={b"lmrec.feedback_events.version": b"1"},
)


class FeedbackStore:
    """Joins feedback to impressions, writes both logs, keeps merged exploration statistics."""

    def __init__(self, cfg: FeedbackConfig, root: str | Path) -> None:
        self.cfg = cfg
        self.root = Path(root)
        self.impression_writer = FeedbackLogWriter(self.root / "impressions", batch_size=cfg.batch_size, max_delay_s=cfg.max_delay_s)
        self._impressions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._seen: set[tuple[str, int]] = set()  # (request_id, item_id) already rewarded
        self._lock = threading.Lock()
        self.state = PolicyState()
        self.impressions_logged = 0
        self.events_written = 0
        self.clicks = 0
        self.event_files: list[Path] = []

    # ---- impressions
    def add_impressions(self, records: list[dict[str, Any]]) -> int:
        """Remember slates for joining and buffer them for the impression log."""
        with self._lock:
            for rec in records:
                self._impressions[rec["request_id"]] = rec
                self._impressions.move_to_end(rec["request_id"])
            while len(self._impressions) > self.cfg.max_impressions:
                self._impressions.popitem(last=False)
            self.impressions_logged += len(records)
        for rec in records:
            self.impression_writer.append(FeedbackRecord(**rec))
        return len(records)

    def has_impression(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._impressions

    # ---- feedback
    def event(self, request_id: str, item_id: int, reward: int) -> dict[str, Any]:
        """The joined event row for one feedback; RequestError for unknown or invalid feedback."""
        with self._lock:
            imp = self._impressions.get(request_id)
            if imp is None:
                raise RequestError(404, f"unknown request_id {request_id!r}: no impression logged (or it expired)")
            if (request_id, item_id) in self._seen:
                raise RequestError(409, f"feedback for item {item_id} of request {request_id!r} was already recorded")
            slate = list(imp["slate"])
            if item_id not in slate:
                raise RequestError(422, f"item {item_id} was not shown in request {request_id!r} (shown: {slate})")
            pos = slate.index(item_id)
            self._seen.add((request_id, item_id))
        return {
            "request_id": request_id,
            "timestamp": dt.datetime.now(dt.timezone.utc),
            "item_id": int(item_id),
            "reward": float(reward),
            "position": pos,
            "propensity": float(imp["propensities"][pos]),
            "policy": imp["policy"],
            "model_version": imp.get("model_version"),
            "user_id": imp.get("user_id"),
        }

    def release(self, rows: list[dict[str, Any]]) -> None:
        """Forget the dedupe marks of rows that were not written (so a retry is accepted)."""
        with self._lock:
            for r in rows:
                self._seen.discard((r["request_id"], r["item_id"]))

    def commit(self, rows: list[dict[str, Any]]) -> Optional[Path]:
        """Write a batch of events durably (temp file, fsync, rename, fsync dir); then count them."""
        if not rows:
            return None
        table = pa.Table.from_pylist(rows, schema=FEEDBACK_EVENT_SCHEMA)
        day = rows[0]["timestamp"].strftime("%Y-%m-%d")
        name = f"part-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        path = write_table_atomic(table, self.root / "feedback" / f"date={day}" / name)
        delta = feedback_state([r["item_id"] for r in rows], [r["reward"] for r in rows])
        with self._lock:
            self.state = self.state.merge(delta)
            self.events_written += len(rows)
            self.clicks += sum(1 for r in rows if r["reward"] > 0)
            self.event_files.append(path)
        return path

    def flush_impressions(self, force: bool = False) -> None:
        if force:
            self.impression_writer.flush()
        else:
            self.impression_writer.maybe_flush()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "impressions_logged": self.impressions_logged,
                "impressions_pending": self.impression_writer.pending,
                "feedback_events": self.events_written,
                "clicks": self.clicks,
                "ctr": self.clicks / self.events_written if self.events_written else 0.0,
                "items_with_stats": len(self.state.ids),
                "log_dir": str(self.root),
            }
