"""Reading and validating feedback logs, and joining rewards to slates (pure pyarrow/numpy)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmrec.exploration.logs.schema import (
    COLUMNS,
    EVENT_JOIN_SCHEMA,
    FEEDBACK_SCHEMA,
    SCHEMA_VERSION,
    VERSION_KEY,
    FeedbackLogError,
    PropensityError,
    RewardError,
)

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
