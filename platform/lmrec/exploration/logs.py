"""The feedback log: a versioned Parquet schema for served slates and their rewards.

One row per served slate (request). Position k of the slate is index k of the
list columns `slate`, `positions`, `propensities` and `rewards`; `positions`
holds the display slot of each entry (0-based and distinct within a row, usually
0..K-1). `rewards` is null when the impression is written and is filled by
`join_rewards` once feedback (clicks) arrives; once filled, every entry must be a
finite number (graded rewards such as ratings or revenue are fine). `propensities[k]` is P(slate[k] shown at position k)
under the policy that served it, which the off-policy estimators divide by.

Files live under `<root>/date=YYYY-MM-DD/part-<utc>-<pid>-<uuid>.parquet` (Hive
partitions by the record's UTC date; `log_file_path`). The serving app's log folder
holds this log of served slates under `impressions/` and its feedback events
(`FEEDBACK_EVENT_SCHEMA`) under `feedback/`; this module is where that layout is defined. `FeedbackLogWriter` buffers records and
writes each batch as one file per UTC date: each goes to a hidden temporary
file, is fsynced, renamed into place, and the directory is fsynced (and the
parent of every folder the write had to create): readers never see a partial
file, and a record is acknowledged (durable) once `flush()` returns. If a write
fails, the files already written stay and count as written, and only the rows
not yet written go back to the buffer (ahead of newer records) for the next
flush: nothing is dropped or written twice by the writer itself.

Validation is pure pyarrow/numpy and raises `FeedbackLogError` naming the file
and column; bad propensities (<= 0, > 1, NaN or null) raise `PropensityError`
and bad rewards (NaN, inf or null inside a filled list) `RewardError`, both with
the number of offending rows. No Ray here: `lmrec.tuning.feedback_io` reads the
same files with Ray Data.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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


# ------------------------------------------------------------------ writer


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(folder: Path) -> list[Path]:
    """Create `folder` and its missing ancestors; return those that were missing, top-down."""
    missing: list[Path] = []
    d = folder
    while not d.is_dir() and d.parent != d:
        missing.append(d)
        d = d.parent
    missing.reverse()
    for d in missing:
        d.mkdir(exist_ok=True)  # a concurrent writer may create it too; its entry is fsynced below either way
    return missing


def write_table_atomic(table: pa.Table, path: Path) -> Path:
    """Write Parquet to a hidden temp file in the same directory, fsync, rename into place.

    Durable on return: the file, its directory, and the parent of every directory this
    call created (up to the first that already existed) are fsynced, so a new
    `date=...` folder cannot vanish with acknowledged files after a power loss. If the
    final directory fsync fails the renamed file is removed again (best effort), so
    that a retry of the same rows does not leave two copies.
    """
    for created in _make_dirs(path.parent):
        _fsync_dir(created.parent)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        _fsync_dir(path.parent)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


class FeedbackLogWriter:
    """Buffered, atomic, date-partitioned writer of feedback logs (thread-safe).

    `append` validates and buffers a record (flushing when `batch_size` are
    pending); `flush` writes everything pending and returns only after every
    file is renamed into place and fsynced: that is the acknowledgement. A failed
    flush re-raises; files it completed before the failure (one per UTC date) count
    as written, and only the rows not yet written stay buffered for the next flush.
    """

    def __init__(
        self, root: str | Path, batch_size: int = 1000, max_delay_s: float = 5.0, name: str | None = None
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.root = Path(root)
        self.batch_size = batch_size
        self.max_delay_s = max_delay_s  # `maybe_flush` writes when the oldest pending record is this old
        self.name = name or f"{os.getpid()}"
        self._pending: list[dict[str, Any]] = []
        self._oldest: float | None = None
        self._lock = threading.Lock()  # guards the buffer
        self._flush_lock = threading.Lock()  # one flush at a time
        self.files_written: list[Path] = []
        self.records_written = 0

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def append(self, record: FeedbackRecord | Mapping[str, Any]) -> int:
        """Validate and buffer one record; returns the number pending (not yet durable)."""
        return self.append_rows(
            [record.to_row() if isinstance(record, FeedbackRecord) else FeedbackRecord(**record).to_row()]
        )

    def append_rows(self, rows: Sequence[dict[str, Any]]) -> int:
        """Buffer rows already validated by `FeedbackRecord.to_row` (as a batch); returns the
        number pending. Flushes when `batch_size` are pending, as `append` does."""
        if not rows:
            return self.pending
        with self._lock:
            self._pending.extend(rows)
            if self._oldest is None:
                self._oldest = time.monotonic()
            n = len(self._pending)
        if n >= self.batch_size:
            self.flush()
            return self.pending
        return n

    def write(self, records: Iterable[FeedbackRecord | Mapping[str, Any]]) -> list[Path]:
        """Append all `records` and flush: durable when this returns."""
        rows = [r.to_row() if isinstance(r, FeedbackRecord) else FeedbackRecord(**r).to_row() for r in records]
        with self._lock:
            self._pending.extend(rows)
            if self._oldest is None and rows:
                self._oldest = time.monotonic()
        return self.flush()

    def maybe_flush(self) -> list[Path]:
        """Flush if the oldest pending record has waited `max_delay_s` (call from a timer)."""
        with self._lock:
            due = self._oldest is not None and time.monotonic() - self._oldest >= self.max_delay_s
        return self.flush() if due else []

    def flush(self) -> list[Path]:
        """Write every pending record; return the files written once they are durable."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending, self._oldest = self._pending, [], None
            if not batch:
                return []
            written: list[Path] = []
            done = np.zeros(len(batch), dtype=bool)
            try:
                for path, rows_idx in self._write_batch(batch):
                    written.append(path)
                    done[rows_idx] = True
            except BaseException:
                rest = [row for row, ok in zip(batch, done) if not ok]
                with self._lock:  # keep the unwritten rows, in order, ahead of anything appended meanwhile
                    self._pending = rest + self._pending
                    if self._pending:
                        self._oldest = time.monotonic()
                self.files_written.extend(written)  # durable already: re-writing them would duplicate rows
                self.records_written += int(done.sum())
                raise
            self.files_written.extend(written)
            self.records_written += len(batch)
            return written

    def _write_batch(self, batch: list[dict[str, Any]]) -> Iterator[tuple[Path, list[int]]]:
        """Write one file per UTC date, yielding (file, indices into batch) as each becomes durable,
        so that a failure part-way tells `flush` exactly which rows are already written."""
        by_date: dict[str, list[int]] = {}
        for i, row in enumerate(batch):
            day = row["timestamp"].astimezone(dt.timezone.utc).strftime("%Y-%m-%d")
            by_date.setdefault(day, []).append(i)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        for day, idx in sorted(by_date.items()):
            path = log_file_path(self.root, day, f"{stamp}-{self.name}-{uuid.uuid4().hex[:12]}")
            yield write_table_atomic(records_to_table([batch[i] for i in idx]), path), idx

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> FeedbackLogWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------ reading and validation


def list_log_files(root: str | Path) -> list[Path]:
    """Committed log files under `root` (a file, or a folder searched recursively; temp files skipped)."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.exists():
        raise FileNotFoundError(f"feedback log folder not found: {root}")
    return sorted(
        p for p in root.rglob("*.parquet") if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    )


def validate_schema(schema: pa.Schema, source: str) -> int:
    """Check the version and every column's type; returns the schema version."""
    meta = schema.metadata or {}
    if VERSION_KEY not in meta:
        raise FeedbackLogError(
            source, None, f"not an lmrec feedback log: schema metadata has no {VERSION_KEY.decode()!r}"
        )
    try:
        version = int(meta[VERSION_KEY])
    except ValueError as exc:
        raise FeedbackLogError(source, None, f"unreadable schema version {meta[VERSION_KEY]!r}") from exc
    if version > SCHEMA_VERSION:
        raise FeedbackLogError(source, None, f"schema version {version} is newer than this reader ({SCHEMA_VERSION})")
    check_columns(schema, FEEDBACK_SCHEMA, source)
    return version


def check_columns(schema: pa.Schema, expected: Iterable[pa.Field], source: str, missing_hint: str = "") -> None:
    """Every expected column is present with its type (extra columns are allowed)."""
    for f in expected:
        idx = schema.get_field_index(f.name)
        if idx < 0:
            raise FeedbackLogError(source, f.name, f"is missing (expected {f.type}){missing_hint}")
        got = schema.field(idx).type
        if not got.equals(f.type):
            raise FeedbackLogError(source, f.name, f"has type {got}, expected {f.type}")


def _list_lengths(table: pa.Table, col: str) -> np.ndarray:
    return pc.fill_null(pc.list_value_length(table[col]), -1).to_numpy().astype(np.int64)


def validate_table(table: pa.Table, source: str = "<table>") -> None:
    """Schema, nulls, list lengths, propensities in (0, 1], distinct non-negative positions,
    finite rewards and slate within candidates; errors count the offending rows."""
    validate_schema(table.schema, source)
    n = table.num_rows
    if n == 0:
        return
    for f in FEEDBACK_SCHEMA:
        if not f.nullable and table[f.name].null_count:
            raise FeedbackLogError(source, f.name, f"{table[f.name].null_count} row(s) are null")
    k = _list_lengths(table, "slate")
    if np.any(k == 0):
        raise FeedbackLogError(source, "slate", f"{int((k == 0).sum())} row(s) have an empty slate")
    for col in ("positions", "propensities"):
        bad = _list_lengths(table, col) != k
        if bad.any():
            raise FeedbackLogError(
                source,
                col,
                f"{int(bad.sum())} row(s) have a length different from 'slate' (first at row {int(np.argmax(bad))})",
            )
    rl = _list_lengths(table, "rewards")
    bad = (rl != -1) & (rl != k)
    if bad.any():
        raise FeedbackLogError(
            source,
            "rewards",
            f"{int(bad.sum())} row(s) have a length different from 'slate' (first at row {int(np.argmax(bad))})",
        )
    bad = _list_lengths(table, "scores") != _list_lengths(table, "candidates")
    if bad.any():
        raise FeedbackLogError(
            source,
            "scores",
            f"{int(bad.sum())} row(s) have a length different from 'candidates' (first at row {int(np.argmax(bad))})",
        )
    row_of = np.repeat(np.arange(n), k)
    props = _flat_float(table["propensities"])  # null elements read as NaN
    bad_value = ~((props > 0) & (props <= 1))  # NaN fails both comparisons
    if bad_value.any():
        bad_rows = np.unique(row_of[bad_value])
        raise PropensityError(source, len(bad_rows), n, int(bad_rows[0]), float(props[bad_value][0]))
    pos = pc.fill_null(pc.list_flatten(table["positions"]), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((pos, row_of))
    srow, spos = row_of[order], pos[order]
    repeated = srow[1:][(srow[1:] == srow[:-1]) & (spos[1:] == spos[:-1])]
    bad_rows = np.union1d(row_of[pos < 0], repeated)
    if len(bad_rows):
        first = int(bad_rows[0])
        raise FeedbackLogError(
            source,
            "positions",
            f"{len(bad_rows)} of {n} row(s) have a negative, null or repeated position "
            f"(first at row {first}: {table['positions'][first].as_py()!r})",
        )
    rewards = _flat_float(table["rewards"])  # rows whose rewards are null (not yet joined) contribute nothing
    bad_value = ~np.isfinite(rewards)
    if bad_value.any():
        bad_rows = np.unique(np.repeat(np.arange(n), np.maximum(rl, 0))[bad_value])
        raise RewardError(source, len(bad_rows), n, int(bad_rows[0]), float(rewards[bad_value][0]))
    missing = _slate_not_in_candidates(table)
    if missing.any():
        rows = np.flatnonzero(missing)
        raise FeedbackLogError(
            source,
            "slate",
            f"{len(rows)} row(s) show items that are not among their candidates (first at row {int(rows[0])})",
        )


def _flat_float(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list column's elements as float64, null elements as NaN (null lists contribute nothing)."""
    flat = pc.list_flatten(column)
    return pc.fill_null(pc.cast(flat, pa.float64()), float("nan")).to_numpy(zero_copy_only=False)


def slate_candidate_index(table: pa.Table) -> np.ndarray:
    """(total slate entries,) index of each shown item in its row's candidate list (-1 if absent)."""
    n = table.num_rows
    k = _list_lengths(table, "slate")
    nc = _list_lengths(table, "candidates")
    slate = pc.list_flatten(table["slate"]).to_numpy()
    cand = pc.list_flatten(table["candidates"]).to_numpy()
    srow, crow = np.repeat(np.arange(n), k), np.repeat(np.arange(n), nc)
    cpos = np.arange(len(cand)) - np.repeat(np.concatenate([[0], np.cumsum(nc)[:-1]]), nc)
    uniq, codes = np.unique(np.concatenate([cand, slate]), return_inverse=True)
    ccode, scode = codes[: len(cand)], codes[len(cand) :]
    width = np.int64(len(uniq))
    ckey, skey = crow * width + ccode, srow * width + scode
    if len(ckey) == 0:
        return np.full(len(skey), -1, dtype=np.int64)
    order = np.argsort(ckey, kind="stable")
    sorted_keys = ckey[order]
    at = np.clip(np.searchsorted(sorted_keys, skey), 0, len(order) - 1)
    return np.where(sorted_keys[at] == skey, cpos[order][at], -1).astype(np.int64)


def _slate_not_in_candidates(table: pa.Table) -> np.ndarray:
    idx = slate_candidate_index(table)
    k = _list_lengths(table, "slate")
    row_of = np.repeat(np.arange(table.num_rows), k)
    return np.bincount(row_of[idx < 0], minlength=table.num_rows) > 0


def read_log_file(path: str | Path, validate: bool = True) -> pa.Table:
    """One log file; with `validate`, schema and rows are checked (errors name the file)."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FeedbackLogError(str(path), None, f"not a readable Parquet file ({exc})") from exc
    if validate:
        validate_table(table, str(path))
    return table.select(list(COLUMNS)).cast(FEEDBACK_SCHEMA)


def read_logs(root: str | Path, validate: bool = True) -> pa.Table:
    """Every committed file under `root`, concatenated (in-process; Ray Data: lmrec.tuning.feedback_io)."""
    files = list_log_files(root)
    if not files:
        return FEEDBACK_SCHEMA.empty_table()
    return pa.concat_tables([read_log_file(f, validate) for f in files])


# ------------------------------------------------------------------ rewards


def join_rewards(table: pa.Table, feedback: pa.Table, default: float = 0.0) -> pa.Table:
    """Fill `rewards` from feedback rows (request_id, item_id, reward).

    Shown items without feedback get `default` (0: no click observed); feedback for
    items that were not shown is ignored. Several feedback rows for one shown item
    keep the largest reward (a click is a click).
    """
    for col in EVENT_JOIN_SCHEMA.names:
        if col not in feedback.column_names:
            raise FeedbackLogError("<feedback>", col, "is missing")
    import pandas as pd

    k = _list_lengths(table, "slate")
    shown = pd.DataFrame(
        {
            "request_id": np.repeat(table["request_id"].to_numpy(zero_copy_only=False), k),
            "item_id": pc.list_flatten(table["slate"]).to_numpy(),
            "_order": np.arange(int(k.sum())),
        }
    )
    fb = feedback.select(EVENT_JOIN_SCHEMA.names).to_pandas()
    fb = fb.groupby(["request_id", "item_id"], as_index=False)["reward"].max()
    merged = shown.merge(fb, on=["request_id", "item_id"], how="left").sort_values("_order")
    values = merged["reward"].fillna(default).to_numpy(np.float32)
    offsets = np.concatenate([[0], np.cumsum(k)]).astype(np.int32)
    rewards = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()))
    idx = table.schema.get_field_index("rewards")
    return table.set_column(idx, FEEDBACK_SCHEMA.field("rewards"), rewards)
