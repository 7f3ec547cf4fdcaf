"""The feedback-log writer: atomic, fsynced Parquet files, one per UTC date and batch."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmrec.exploration.logs.schema import TMP_PREFIX, FeedbackRecord, log_file_path, records_to_table

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
