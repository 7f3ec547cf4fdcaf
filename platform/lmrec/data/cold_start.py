"""The cold-start split: the items that arrive last are removed from training, then ranked.

`cold_items` picks the items whose first interaction comes latest: by timestamp where the
dataset has time (MovieLens), by relative position in users' sequences where it has only
order (the SASRec-format Amazon files, whose `ts` is the line number). `write_cold_start`
writes a prepared dataset (same format as `lmrec.data.prepare`) whose training part (each
user's items[:-2]) holds no interaction with a cold item, while the validation and test
targets (items[-2], items[-1]) are kept: a test target may then be an item the model never
saw in training. Users left with no training item are dropped (counted in the manifest).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmrec.data.sequences import SequenceData

Order = Literal["auto", "timestamp", "position"]


def first_seen(data: SequenceData, by: Order = "auto") -> tuple[np.ndarray, str]:
    """(V,) when each item is first seen (larger = later; +inf for padding), and the order used."""
    if by == "auto":
        by = "position" if data.manifest.get("dataset", "").startswith("sasrec:") else "timestamp"
    lengths = np.diff(data.offsets)
    if by == "timestamp":
        when = data.ts.astype(np.float64)
    else:  # relative position in the user's sequence, 0 = first, 1 = last
        start = np.repeat(data.offsets[:-1], lengths)
        denom = np.repeat(np.maximum(lengths - 1, 1), lengths)
        when = (np.arange(len(data.items)) - start) / denom
    first = np.full(data.num_items + 1, np.inf)
    np.minimum.at(first, data.items, when)
    return first, by


def cold_items(data: SequenceData, fraction: float, by: Order = "auto") -> tuple[np.ndarray, str]:
    """item_idx of the `fraction` of items first seen latest (ties broken by item_idx), and the order used."""
    if not 0 < fraction < 1:
        raise ValueError(f"cold fraction must be in (0, 1), got {fraction}")
    first, used = first_seen(data, by)
    items = np.arange(1, data.num_items + 1)
    order = np.lexsort((items, first[1:]))  # earliest first
    n = max(1, round(fraction * data.num_items))
    return np.sort(items[order[-n:]]), used


def write_cold_start(data: SequenceData, cold: np.ndarray, src: Path, out: Path, meta: dict[str, Any]) -> Path:
    """A prepared dataset folder at `out`: `data` without training interactions with `cold` items."""
    is_cold = np.zeros(data.num_items + 1, bool)
    is_cold[cold] = True
    seqs, keep_users = [], []
    removed = 0
    for u in range(data.num_users):
        s = data.sequence(u)
        train = s[:-2]
        kept = train[~is_cold[train]]
        removed += len(train) - len(kept)
        if len(kept):
            seqs.append(np.concatenate([kept, s[-2:]]))
            keep_users.append(u)
    users = np.asarray(keep_users, np.int64)
    lengths = np.array([len(s) for s in seqs], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate(seqs).astype(np.int32)
    last = offsets[1:] - 1
    seq = pa.table(
        {
            "user_idx": pa.array(np.arange(len(users), dtype=np.int32)),
            "user_id": pa.array(data.user_ids[users]),
            "items": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
            # timestamps and ratings are not carried: training and evaluation read items only
            "ts": pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.zeros(len(flat), np.int64))),
            "ratings": pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ones(len(flat), np.float32))),
            "valid_item": pa.array(flat[last - 1]),
            "test_item": pa.array(flat[last]),
        }
    )
    items = pq.read_table(src / "items.parquet")
    mask = np.ones(len(flat), bool)
    mask[last] = mask[last - 1] = False
    counts = np.bincount(flat[mask], minlength=data.num_items + 1)[1:]
    items = items.set_column(items.column_names.index("train_count"), "train_count", pa.array(counts.astype(np.int64)))
    manifest = dict(data.manifest)
    test_cold = int(is_cold[flat[last]].sum())
    manifest.update(
        config_hash=f"{data.manifest['config_hash']}-cold-{len(cold)}",
        num_users=len(users),
        num_interactions=len(flat),
        cold_start={
            **meta,
            "cold_items": int(len(cold)),
            "cold_item_idx": [int(i) for i in cold],
            "train_interactions_removed": int(removed),
            "users_dropped": int(data.num_users - len(users)),
            "test_targets_cold": test_cold,
            "test_targets_warm": int(len(users) - test_cold),
        },
    )
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    pq.write_table(seq, tmp / manifest["files"]["sequences"])
    pq.write_table(items, tmp / manifest["files"]["items"])
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
