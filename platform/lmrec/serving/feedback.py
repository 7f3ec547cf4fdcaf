"""Impressions, feedback and exploration statistics behind the FeedbackLog deployment (Ray-free).

* Impressions (one row per served slate, FEEDBACK_SCHEMA) are buffered and written in
  batches by `FeedbackLogWriter` under `<root>/impressions/`.
* Feedback events are joined with their impression (slate position, propensity,
  policy, model version) and written under `<root>/feedback/` by `commit`, which returns
  only once the file is renamed into place and fsynced: the app acknowledges a
  feedback request with 2xx only after that, so an acknowledged record is never lost.
  Each event row is self-contained for off-policy evaluation;
  `lmrec.exploration.logs.join_rewards` fills impression rows from them.
* Exploration statistics: every shown item counts one impression (plus the model's
  expected click for it, which lift policies learn against) when its slate is logged;
  a positive feedback adds one click. Counting impressions at display time keeps
  click rates honest when clients report only clicks. Ranker replicas pull the totals
  as a PolicyState.
* Sharding (lmrec.serving.shards): a store is shard `shard` of `cfg.shards`. It is given only the
  slates it owns, tags its file names with `s<shard>of<shards>` (one-shard logs keep untagged
  names) in the same `impressions/` and `feedback/` folders, so readers see one log, and
  `recover` takes back only the slates whose request_id it owns.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lmrec.exploration.logs import (
    EVENT_JOIN_SCHEMA,
    FEEDBACK_DIR,
    FEEDBACK_EVENT_SCHEMA,
    IMPRESSIONS_DIR,
    FeedbackLogWriter,
    FeedbackRecord,
    log_file_path,
    write_table_atomic,
)
from lmrec.exploration.policies import MICRO, PolicyConfig, PolicyState, build_policy
from lmrec.serving.config import FeedbackConfig
from lmrec.serving.runtime import RequestError
from lmrec.serving.shards import owner_shard, shard_tag

GREEDY_PARAMS = '{"type": "greedy"}'


def _joinable(row: dict[str, Any]) -> dict[str, Any]:
    """What a feedback event needs from its impression: not the candidates and their scores,
    which are most of a row's memory (the join window holds `max_impressions` of these)."""
    return {
        "slate": row["slate"],
        "propensities": row["propensities"],
        "policy": row["policy"],
        "model_version": row.get("model_version"),
        "user_id": row.get("user_id"),
    }


class FeedbackStore:
    """Joins feedback to impressions, writes both logs, keeps merged exploration statistics."""

    def __init__(self, cfg: FeedbackConfig, root: str | Path, shard: int = 0) -> None:
        if not 0 <= shard < cfg.shards:
            raise ValueError(f"shard {shard} is not one of the log's {cfg.shards} shards")
        self.cfg = cfg
        self.root = Path(root)
        self.shard = shard
        tag = shard_tag(shard, cfg.shards)
        self._file_tag = f"{tag}-{os.getpid()}" if tag else f"{os.getpid()}"  # in every file name it writes
        self.impression_writer = FeedbackLogWriter(
            self.root / IMPRESSIONS_DIR, batch_size=cfg.batch_size, max_delay_s=cfg.max_delay_s, name=self._file_tag
        )
        self._impressions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._seen: set[tuple[str, int]] = set()  # (request_id, item_id) already rewarded
        self._lock = threading.Lock()
        self._stats: dict[int, list[int]] = {}  # item id -> [impressions, clicks, expected micro-clicks]
        self._click_models: dict[str, object] = {}  # policy params JSON -> policy (for click_probability)
        self.impressions_logged = 0
        self.events_written = 0
        self.clicks = 0
        self.event_files: list[Path] = []

    # ---- restart
    def recover(self) -> dict[str, int]:
        """Rebuild the join window from the log on disk after a restart of the owning replica.

        The newest `max_impressions` logged slates become joinable again (with their
        exploration statistics), and feedback already written for them is marked seen, so a
        client retrying an acknowledged feedback gets 409 rather than a second row.
        Impressions still buffered in the dead process's memory are not on disk and stay lost.
        Of a sharded log, only the slates this shard owns now (by their request_id) are taken
        back, from every file: ownership follows the hash, so it holds across a change of
        `shards` and for files written before the log was sharded.
        """
        import pyarrow.parquet as pq

        cols = [
            "request_id",
            "candidates",
            "scores",
            "slate",
            "propensities",
            "policy",
            "policy_params",
            "user_id",
            "model_version",
        ]
        files = sorted((self.root / IMPRESSIONS_DIR).rglob("*.parquet"), key=lambda p: p.name, reverse=True)
        rows: list[dict[str, Any]] = []
        for f in files:  # newest first, until the window is full
            rows = [r for r in pq.read_table(f, columns=cols).to_pylist() if self._owns(r["request_id"])] + rows
            if len(rows) >= self.cfg.max_impressions:
                rows = rows[-self.cfg.max_impressions :]
                break
        with self._lock:
            for rec in rows:
                self._impressions[rec["request_id"]] = _joinable(rec)
            self._count_impressions(rows)
            self.impressions_logged += len(rows)
        events = 0
        for f in sorted((self.root / FEEDBACK_DIR).rglob("*.parquet")):
            t = [
                r for r in pq.read_table(f, columns=EVENT_JOIN_SCHEMA.names).to_pylist() if self._owns(r["request_id"])
            ]
            with self._lock:
                for r in t:
                    if r["request_id"] in self._impressions:
                        self._seen.add((r["request_id"], int(r["item_id"])))
                        if r["reward"] > 0:
                            st = self._stats.setdefault(int(r["item_id"]), [1, 0, 0])
                            st[1] = min(st[1] + 1, st[0])
                self.events_written += len(t)
                self.clicks += sum(1 for r in t if r["reward"] > 0)
            events += len(t)
        return {"impressions": len(rows), "feedback_events": events}

    def _owns(self, request_id: str) -> bool:
        return self.cfg.shards == 1 or owner_shard(request_id, self.cfg.shards) == self.shard

    # ---- impressions
    def add_impressions(self, records: list[dict[str, Any]]) -> int:
        """Remember slates for joining and buffer them for the impression log.

        Every record is validated first, so a bad one changes nothing; the counting is
        vectorised over the batch (a shard takes the slates it owns from every replica)."""
        rows = [FeedbackRecord(**rec).to_row() for rec in records]
        with self._lock:
            for row in rows:
                self._impressions[row["request_id"]] = _joinable(row)
                self._impressions.move_to_end(row["request_id"])
            self._count_impressions(rows)
            while len(self._impressions) > self.cfg.max_impressions:
                self._impressions.popitem(last=False)
            self.impressions_logged += len(rows)
        self.impression_writer.append_rows(rows)
        return len(rows)

    def _click_model(self, key: str) -> Any:
        """The policy (for its click_probability) of a row's policy_params JSON, built once."""
        model = self._click_models.get(key)
        if model is None:
            model = build_policy(PolicyConfig.from_dict(json.loads(key)))
            self._click_models[key] = model
        return model

    def _count_impressions(self, rows: list[dict[str, Any]]) -> None:
        """One impression per shown item, with the expected click under the serving policy's
        calibration. Rows of one policy and shape are scored together: each slate item's score
        is found among its candidates by one broadcast comparison."""
        groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
        for row in rows:
            params = row.get("policy_params")  # JSON text, from to_row or the Parquet log
            if not params or params == "{}":  # no policy given: greedy, as before
                params = GREEDY_PARAMS
            key = (params, len(row["candidates"]), len(row["slate"]))
            groups.setdefault(key, []).append(row)
        for (params, _, _), group in groups.items():
            cand = np.array([r["candidates"] for r in group], dtype=np.int64)  # (n, N)
            scores = np.array([r["scores"] for r in group], dtype=np.float64)  # (n, N)
            slate = np.array([r["slate"] for r in group], dtype=np.int64)  # (n, K)
            match = cand[:, None, :] == slate[:, :, None]  # (n, K, N)
            shown = np.where(match.any(-1), np.take_along_axis(scores, match.argmax(-1), axis=1), 0.0)
            micro = np.round(self._click_model(params).click_probability(shown) * MICRO).astype(np.int64)
            for item, e in zip(slate.ravel().tolist(), micro.ravel().tolist()):
                st = self._stats.setdefault(item, [0, 0, 0])
                st[0] += 1
                st[2] += e

    @property
    def state(self) -> PolicyState:
        """Merged statistics of everything logged so far (what replicas pull)."""
        with self._lock:
            if not self._stats:
                return PolicyState()
            ids = np.fromiter(self._stats.keys(), dtype=np.int64, count=len(self._stats))
            arr = np.array(list(self._stats.values()), dtype=np.int64)
        return PolicyState(ids, arr[:, 0], arr[:, 1], arr[:, 2])

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

    def commit(self, rows: list[dict[str, Any]]) -> Path | None:
        """Write a batch of events durably (temp file, fsync, rename, fsync dir); then count them."""
        if not rows:
            return None
        table = pa.Table.from_pylist(rows, schema=FEEDBACK_EVENT_SCHEMA)
        day = rows[0]["timestamp"].strftime("%Y-%m-%d")
        name = (
            f"{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}-{self._file_tag}-{uuid.uuid4().hex[:8]}"
        )
        path = write_table_atomic(table, log_file_path(self.root / FEEDBACK_DIR, day, name))
        with self._lock:
            for r in rows:
                if r["reward"] > 0:  # the impression was counted when the slate was logged
                    st = self._stats.setdefault(int(r["item_id"]), [1, 0, 0])
                    st[1] = min(st[1] + 1, st[0])
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
                "items_with_stats": len(self._stats),
                "log_dir": str(self.root),
            }
