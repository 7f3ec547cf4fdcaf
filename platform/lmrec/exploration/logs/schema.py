"""The feedback-log layout, defined once: folders, file paths, the slate and event schemas, records, errors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1
VERSION_KEY = b"lmrec.feedback_log.version"
PARTITION_KEY = "date"
FILE_PREFIX = "part-"
TMP_PREFIX = "."  # hidden: pyarrow datasets and Ray Data skip names starting with '.' or '_'

FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("user_id", pa.string()),  # or null when only context features are known
        pa.field("context", pa.list_(pa.float32())),  # optional context features
        pa.field("candidates", pa.list_(pa.int64()), nullable=False),  # the model's top-N item ids
        pa.field("scores", pa.list_(pa.float32()), nullable=False),  # model score of each candidate
        pa.field("slate", pa.list_(pa.int64()), nullable=False),  # shown item ids, in display order
        pa.field("positions", pa.list_(pa.int16()), nullable=False),  # display slot of each slate entry
        pa.field("propensities", pa.list_(pa.float64()), nullable=False),  # P(slate[k] at position k)
        pa.field("policy", pa.string(), nullable=False),  # policy type, e.g. "thompson"
        pa.field("policy_params", pa.string(), nullable=False),  # JSON of the PolicyConfig
        pa.field("model_version", pa.string()),  # e.g. "models:/lmrec-seqrec/3"
        pa.field("rewards", pa.list_(pa.float32())),  # per slate entry; null until joined
    ],
    metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()},
)
COLUMNS = tuple(FEEDBACK_SCHEMA.names)

# The serving app's log folder (`feedback.log_dir`) holds two logs side by side:
IMPRESSIONS_DIR = "impressions"  # served slates (FEEDBACK_SCHEMA, rewards null) ...
FEEDBACK_DIR = "feedback"  # ... and feedback events (FEEDBACK_EVENT_SCHEMA), one row per (request, shown item) reported
FEEDBACK_EVENT_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("position", pa.int16(), nullable=False),  # of the item in its slate
        pa.field("propensity", pa.float64(), nullable=False),  # of the item at that position
        pa.field("policy", pa.string(), nullable=False),
        pa.field("model_version", pa.string()),
        pa.field("user_id", pa.string()),
    ],
    metadata={b"lmrec.feedback_events.version": b"1"},
)
# What `join_rewards` reads from feedback events; nullable, so that readers can count and name bad rows.
EVENT_JOIN_SCHEMA = pa.schema(
    [FEEDBACK_EVENT_SCHEMA.field(name).with_nullable(True) for name in ("request_id", "item_id", "reward")]
)


def log_file_path(root: str | Path, day: str, name: str) -> Path:
    """Where a committed log file goes: `<root>/date=<day>/part-<name>.parquet` (`day` is the UTC date)."""
    return Path(root) / f"{PARTITION_KEY}={day}" / f"{FILE_PREFIX}{name}.parquet"


class FeedbackLogError(ValueError):
    """A feedback-log file or record is malformed; the message names the file and column."""

    def __init__(self, source: str, column: str | None, message: str) -> None:
        self.source, self.column = source, column
        where = f"{source}: column '{column}'" if column else source
        super().__init__(f"{where}: {message}")


class PropensityError(FeedbackLogError):
    """Propensities of 0, below 0, above 1 or NaN; never silently dropped."""

    def __init__(self, source: str, bad_rows: int, total_rows: int, first_row: int, first_value: float) -> None:
        self.bad_rows = bad_rows
        super().__init__(
            source,
            "propensities",
            f"{bad_rows} of {total_rows} row(s) have a propensity outside (0, 1] "
            f"(first at row {first_row}: {first_value!r}); such rows cannot be reweighted and are rejected",
        )


class RewardError(FeedbackLogError):
    """Rewards that are NaN, infinite or null inside a filled list: they would turn IPS/SNIPS into NaN."""

    def __init__(self, source: str, bad_rows: int, total_rows: int, first_row: int, first_value: float | None) -> None:
        self.bad_rows = bad_rows
        super().__init__(
            source,
            "rewards",
            f"{bad_rows} of {total_rows} row(s) have a null or non-finite reward "
            f"(first at row {first_row}: {first_value!r})",
        )


# ------------------------------------------------------------------ records


@dataclass
class FeedbackRecord:
    """One served slate, as the serving app logs it."""

    request_id: str
    candidates: Sequence[int]
    scores: Sequence[float]
    slate: Sequence[int]
    propensities: Sequence[float]
    policy: str
    policy_params: Mapping[str, Any] | str = field(default_factory=dict)
    timestamp: dt.datetime | float | None = None  # datetime or unix seconds; None = now
    user_id: str | None = None
    context: Sequence[float] | None = None
    positions: Sequence[int] | None = None  # None = 0..K-1
    model_version: str | None = None
    rewards: Sequence[float] | None = None

    def to_row(self) -> dict[str, Any]:
        """A validated plain-dict row in FEEDBACK_SCHEMA's column order."""
        k = len(self.slate)
        ts = self.timestamp
        if ts is None:
            ts = dt.datetime.now(dt.timezone.utc)
        elif isinstance(ts, (int, float)):
            ts = dt.datetime.fromtimestamp(float(ts), dt.timezone.utc)
        elif ts.tzinfo is None:
            raise FeedbackLogError(f"record {self.request_id!r}", "timestamp", "must be timezone-aware (UTC)")
        row = {
            "request_id": str(self.request_id),
            "timestamp": ts,
            "user_id": None if self.user_id is None else str(self.user_id),
            "context": None if self.context is None else [float(x) for x in self.context],
            "candidates": [int(x) for x in self.candidates],
            "scores": [float(x) for x in self.scores],
            "slate": [int(x) for x in self.slate],
            "positions": list(range(k)) if self.positions is None else [_opt(int, x) for x in self.positions],
            "propensities": [_opt(float, x) for x in self.propensities],
            "policy": str(self.policy),
            "policy_params": self.policy_params
            if isinstance(self.policy_params, str)
            else json.dumps(self.policy_params, sort_keys=True),
            "model_version": self.model_version,
            "rewards": None if self.rewards is None else [_opt(float, x) for x in self.rewards],
        }
        _check_row(row, f"record {self.request_id!r}")
        return row


def _opt(cast: Any, x: Any) -> Any:
    """cast(x), keeping None so that validation reports it with the column name."""
    return None if x is None else cast(x)


def _check_row(row: Mapping[str, Any], source: str) -> None:
    """Validate one row dict as `validate_table` does a table (errors count it as 1 of 1 rows)."""
    k = len(row["slate"])
    if k == 0:
        raise FeedbackLogError(source, "slate", "is empty")
    for col in ("positions", "propensities"):
        if len(row[col]) != k:
            raise FeedbackLogError(source, col, f"has {len(row[col])} entries, slate has {k}")
    if row["rewards"] is not None and len(row["rewards"]) != k:
        raise FeedbackLogError(source, "rewards", f"has {len(row['rewards'])} entries, slate has {k}")
    if len(row["scores"]) != len(row["candidates"]):
        raise FeedbackLogError(
            source, "scores", f"has {len(row['scores'])} entries, candidates has {len(row['candidates'])}"
        )
    bad = [p for p in row["propensities"] if p is None or not (0.0 < p <= 1.0)]
    if bad:
        raise PropensityError(source, 1, 1, 0, bad[0])
    positions = row["positions"]
    if any(p is None or p < 0 for p in positions) or len(set(positions)) != len(positions):
        raise FeedbackLogError(
            source,
            "positions",
            f"1 of 1 row(s) have a negative, null or repeated position (first at row 0: {list(positions)!r})",
        )
    if row["rewards"] is not None:
        bad_r = [r for r in row["rewards"] if r is None or not np.isfinite(r)]
        if bad_r:
            raise RewardError(source, 1, 1, 0, bad_r[0])
    missing = set(row["slate"]) - set(row["candidates"])
    if missing:
        raise FeedbackLogError(source, "slate", f"item(s) {sorted(missing)[:5]} are not among the candidates")


def records_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (from `FeedbackRecord.to_row`) -> a table with FEEDBACK_SCHEMA."""
    return pa.Table.from_pylist(list(rows), schema=FEEDBACK_SCHEMA)
