"""Ray Data reader for feedback logs written by `lmrec.exploration.logs.FeedbackLogWriter`.

`read_feedback_logs` checks every file's schema on the driver (Parquet footers
only, so a schema-mismatched file fails before any task runs, with its name and
the offending column) and validates rows inside the read tasks (list lengths,
propensities in (0, 1], slates within candidates), each error naming its file.
Hidden temp files of in-flight writes ('.'-prefixed) are skipped by Ray Data's
file listing, as by `list_log_files`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmrec.exploration.logs import COLUMNS, FEEDBACK_SCHEMA, FeedbackLogError, list_log_files, validate_schema, validate_table

PATH_COLUMN = "path"


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def check_log_schemas(path: str | Path) -> list[Path]:
    """Validate the schema of every committed file under a local `path`; returns the files."""
    files = list_log_files(path)
    for f in files:
        try:
            schema = pq.read_schema(f)
        except (pa.ArrowInvalid, OSError) as exc:
            raise FeedbackLogError(str(f), None, f"not a readable Parquet file ({exc})") from exc
        validate_schema(schema, str(f))
    return files


def _validate_batch(batch: pa.Table) -> pa.Table:
    """Row checks per source file (so errors name the file); passes the batch through."""
    paths = batch[PATH_COLUMN]
    for path in pc.unique(paths).to_pylist():
        part = batch.filter(pc.equal(paths, path)).select(list(COLUMNS)).cast(FEEDBACK_SCHEMA)
        validate_table(part, str(path))
    return batch


def read_feedback_logs(path: str | Path, validate: bool = True, **read_kwargs: Any) -> Any:
    """A `ray.data.Dataset` of feedback-log rows (plus `date` from the partition and `path`)."""
    import ray.data

    p = str(path)
    if validate and _is_local(p):
        files = check_log_schemas(p.removeprefix("file://"))
        if not files:
            raise FeedbackLogError(p, None, "no feedback-log files found")
    ds = ray.data.read_parquet(p, include_paths=True, **read_kwargs)
    if validate:
        ds = ds.map_batches(_validate_batch, batch_format="pyarrow", batch_size=None)
    return ds


def dataset_to_table(ds: Any) -> pa.Table:
    """Collect a feedback-log dataset on the driver as a FEEDBACK_SCHEMA table (for the estimators)."""
    import ray

    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    if not tables:
        return FEEDBACK_SCHEMA.empty_table()
    return pa.concat_tables([t.select(list(COLUMNS)).cast(FEEDBACK_SCHEMA) for t in tables])


def read_feedback_table(path: str | Path, validate: bool = True, limit: Optional[int] = None) -> pa.Table:
    """Read through Ray Data and collect: what the Tune driver does with logged data."""
    ds = read_feedback_logs(path, validate)
    if limit is not None:
        ds = ds.limit(limit)
    return dataset_to_table(ds)
