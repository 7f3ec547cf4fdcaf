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
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmrec.exploration.logs import (
    COLUMNS,
    EVENT_JOIN_SCHEMA,
    FEEDBACK_DIR,
    FEEDBACK_SCHEMA,
    IMPRESSIONS_DIR,
    FeedbackLogError,
    check_columns,
    join_rewards,
    list_log_files,
    validate_schema,
    validate_table,
)

PATH_COLUMN = "path"


def is_local_path(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _read_schema(f: Path) -> pa.Schema:
    try:
        return pq.read_schema(f)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FeedbackLogError(str(f), None, f"not a readable Parquet file ({exc})") from exc


def check_log_schemas(path: str | Path) -> list[Path]:
    """Validate the schema of every committed file under a local `path`; returns the files."""
    files = list_log_files(path)
    for f in files:
        validate_schema(_read_schema(f), str(f))
    return files


def _validate_batch(batch: pa.Table) -> pa.Table:
    """Row checks per source file (so errors name the file); passes the batch through.

    Column types are checked before anything else: files Ray Data reads from a remote store
    were not footer-checked on the driver, and a cast would convert them silently."""
    paths = batch[PATH_COLUMN]
    for path in pc.unique(paths).to_pylist():
        part = batch.filter(pc.equal(paths, path))
        check_columns(part.schema, FEEDBACK_SCHEMA, str(path))
        validate_table(part.select(list(COLUMNS)).replace_schema_metadata(FEEDBACK_SCHEMA.metadata), str(path))
    return batch


def read_feedback_logs(path: str | Path, validate: bool = True, **read_kwargs: Any) -> Any:
    """A `ray.data.Dataset` of feedback-log rows (plus `date` from the partition and `path`)."""
    import ray.data

    p = str(path)
    if validate and is_local_path(p):
        files = check_log_schemas(p.removeprefix("file://"))
        if not files:
            raise FeedbackLogError(p, None, "no feedback-log files found")
    ds = ray.data.read_parquet(p, include_paths=True, **read_kwargs)
    if validate:
        ds = ds.map_batches(_validate_batch, batch_format="pyarrow", batch_size=None)
    return ds


def _collect(ds: Any, schema: pa.Schema) -> pa.Table:
    """A dataset's blocks on the driver, as one table with `schema`'s columns."""
    import ray

    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.select(schema.names).cast(schema) for t in tables])


def dataset_to_table(ds: Any) -> pa.Table:
    """Collect a feedback-log dataset on the driver as a FEEDBACK_SCHEMA table (for the estimators)."""
    return _collect(ds, FEEDBACK_SCHEMA)


def read_feedback_table(path: str | Path, validate: bool = True, limit: int | None = None) -> pa.Table:
    """Read through Ray Data and collect: what the Tune driver does with logged data."""
    ds = read_feedback_logs(path, validate)
    if limit is not None:
        ds = ds.limit(limit)
    return dataset_to_table(ds)


def is_served_log_dir(path: str | Path) -> bool:
    """Whether `path` is a serving app's log folder (`impressions/` [+ `feedback/`])."""
    return is_local_path(str(path)) and (Path(str(path).removeprefix("file://")) / IMPRESSIONS_DIR).is_dir()


def read_feedback_events(path: str | Path) -> pa.Table:
    """(request_id, item_id, reward) of every feedback event under `path`, read with Ray Data;
    every file's columns are checked on the driver first (errors name the file and column)."""
    import ray.data

    files = list_log_files(path) if Path(path).exists() else []
    for f in files:
        check_columns(_read_schema(f), EVENT_JOIN_SCHEMA, str(f), ": not a feedback-event file")
    if not files:
        return EVENT_JOIN_SCHEMA.empty_table()
    table = _collect(ray.data.read_parquet([str(f) for f in files], columns=EVENT_JOIN_SCHEMA.names), EVENT_JOIN_SCHEMA)
    bad = pc.invert(pc.is_finite(table["reward"]))
    n_bad = int(pc.sum(pc.fill_null(bad, True)).as_py() or 0)
    if n_bad:
        raise FeedbackLogError(
            str(path), "reward", f"{n_bad} of {table.num_rows} feedback event(s) have a null or non-finite reward"
        )
    return table


def read_served_logs(
    path: str | Path, attribution_window_s: float = 600.0, now: float | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    """The serving app's logs as one FEEDBACK_SCHEMA table with rewards joined, in time order.

    Slates come from `impressions/` and clicks from `feedback/` (both read with Ray Data and
    validated per file). Slates served less than `attribution_window_s` before `now` (unix
    seconds; default: the current time) are left out, since their feedback may still come;
    shown items of older slates without feedback get reward 0. Returns the table and counts.
    """
    import time

    root = Path(str(path).removeprefix("file://"))
    impressions = read_feedback_table(root / IMPRESSIONS_DIR)
    events = read_feedback_events(root / FEEDBACK_DIR)
    now = time.time() if now is None else float(now)
    cutoff = pa.scalar(int((now - attribution_window_s) * 1e6), pa.timestamp("us", tz="UTC"))
    mature = impressions.filter(pc.less_equal(impressions["timestamp"], cutoff))
    mature = mature.sort_by([("timestamp", "ascending"), ("request_id", "ascending")])
    joined = join_rewards(mature, events)
    k = pc.list_value_length(mature["slate"]).to_numpy(zero_copy_only=False)
    shown = pa.table(
        {
            "request_id": pa.array(np.repeat(mature["request_id"].to_numpy(zero_copy_only=False), k), pa.string()),
            "item_id": pc.list_flatten(mature["slate"]),
        }
    )
    ev = events.select(["request_id", "item_id"]).group_by(["request_id", "item_id"]).aggregate([])
    matched = ev.join(shown, ["request_id", "item_id"], join_type="inner").num_rows
    rewards = pc.list_flatten(joined["rewards"])
    info = {
        "log_dir": str(root),
        "impressions": impressions.num_rows,
        "too_recent": impressions.num_rows - mature.num_rows,
        "attribution_window_s": attribution_window_s,
        "feedback_events": events.num_rows,
        "events_joined": matched,
        "events_without_slate": ev.num_rows - matched,
        "clicks_joined": int(pc.sum(pc.greater(rewards, 0)).as_py() or 0),
    }
    return joined, info
