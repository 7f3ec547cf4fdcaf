"""Dataset preparation as a Ray Data pipeline, cached by config hash.

read (Ray Data) -> optional rating threshold -> iterative k-core filter ->
hash-shuffle by user -> chronological per-user sequences (ties broken by item id)
-> item/user vocabularies -> leave-one-out split -> Parquet + JSON manifest, with the
item content (text, attributes: lmrec.data.items) aligned to the item vocabulary.

The output folder is `<LMREC_HOME>/prepared/<dataset>-<hash>/` holding
`sequences.parquet`, `items.parquet` and `manifest.json`. It is written to a
temporary folder and renamed, so a crash never leaves a half-prepared cache that a
second run would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmrec.config import config_hash, to_dict
from lmrec.data.config import DataConfig
from lmrec.data.download import DatasetNotFound, locate_dataset
from lmrec.data.items import ContentSource, align_content, resolve_content
from lmrec.data.readers import INTERACTIONS, FileFormat, dataset_spec, parse_lines, read_movie_titles
from lmrec.data.synthetic import item_content, write_synthetic
from lmrec.paths import data_dir as resolve_data_dir
from lmrec.paths import lmrec_home, prepared_dir

log = logging.getLogger(__name__)

PREP_VERSION = 2  # bump when the output format or semantics change (2: item text and attributes)
MANIFEST = "manifest.json"
SEQUENCES = "sequences.parquet"
ITEMS = "items.parquet"


@dataclass
class Source:
    """Resolved input files of a dataset."""

    dataset: str
    kind: str  # "text" or "parquet"
    files: list[str]
    fmt: FileFormat | None
    fingerprint: str
    notice: str | None = None  # e.g. "MovieLens absent: using synthetic data"
    data_dir: str | None = None
    content: ContentSource | None = None  # item text and attributes (lmrec.data.items)


@dataclass
class PreparedDataset:
    path: Path
    manifest: dict[str, Any]
    cached: bool

    @property
    def num_items(self) -> int:
        return int(self.manifest["num_items"])

    @property
    def num_users(self) -> int:
        return int(self.manifest["num_users"])


def _file_fingerprint(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(os.path.basename(p).encode())
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def resolve_source(cfg: DataConfig) -> Source:
    """Find (or download, or generate) the input files for `cfg.dataset`, and its item content."""
    source = _interaction_source(cfg)
    explicit = cfg.items.source not in ("auto", "none")
    if source.data_dir is not None or explicit:
        ddir = Path(source.data_dir) if source.data_dir else resolve_data_dir(cfg.data_dir)
        source.content = resolve_content(cfg.items, source.dataset, ddir)
    elif source.dataset == "synthetic":
        source.content = synthetic_content(cfg)
    return source


def synthetic_content(cfg: DataConfig) -> ContentSource | None:
    """Synthetic items' own content (text and attribute naming their hidden cluster), unless `items.source: none`."""
    if cfg.items.source != "auto":
        return None
    return ContentSource(item_content(cfg.synthetic), [], "synthetic")


def _interaction_source(cfg: DataConfig) -> Source:
    if cfg.dataset == "synthetic":
        return _synthetic_source(cfg)
    ddir = resolve_data_dir(cfg.data_dir)
    spec = dataset_spec(cfg.dataset)
    try:
        path = locate_dataset(spec, ddir, download=cfg.download)
    except DatasetNotFound as exc:
        if not cfg.fallback_to_synthetic:
            raise
        src = _synthetic_source(cfg)
        src.notice = f"{exc} -- falling back to SYNTHETIC data ({cfg.synthetic.num_users} users, {cfg.synthetic.num_items} items)."
        return src
    return Source(cfg.dataset, "text", [str(path)], spec.fmt, _file_fingerprint([str(path)]), data_dir=str(ddir))


def _synthetic_source(cfg: DataConfig) -> Source:
    key = config_hash(cfg.synthetic)[:12]
    out = lmrec_home() / "data" / "synthetic" / key
    done = out / "_SUCCESS"
    if not done.exists():
        if out.exists():
            shutil.rmtree(out)
        write_synthetic(cfg.synthetic, out)
        done.write_text(json.dumps(to_dict(cfg.synthetic)))
    files = sorted(str(p) for p in out.glob("part-*.parquet"))
    return Source("synthetic", "parquet", files, None, f"synthetic:{config_hash(cfg.synthetic)}")


def cache_key(cfg: DataConfig, source: Source) -> str:
    relevant = dict(
        version=PREP_VERSION,
        dataset=source.dataset,
        min_user_interactions=cfg.min_user_interactions,
        min_item_interactions=cfg.min_item_interactions,
        min_rating=cfg.min_rating,
        source=source.fingerprint,
        items=to_dict(cfg.items),
        items_source=_file_fingerprint(source.content.files) if source.content else None,
    )
    return config_hash(relevant)


def prepare_dataset(
    cfg: DataConfig, force: bool = False, cache_root: Path | None = None, engine: str = "ray"
) -> PreparedDataset:
    """Prepared leave-one-out sequences for `cfg`, from cache when the hash matches.

    `engine="ray"` runs the Ray Data pipeline; `"local"` runs the same stages in this
    process, for callers that must not start Ray Data tasks (a Serve replica's
    constructor on a small cluster would wait for CPUs its own deployment holds). Both
    write the same files under the same cache key.
    """
    if engine not in ("ray", "local"):
        raise ValueError(f"engine must be 'ray' or 'local', got {engine!r}")
    source = resolve_source(cfg)
    if source.notice:
        log.warning(source.notice)
        print(f"NOTICE: {source.notice}", flush=True)
    key = cache_key(cfg, source)
    root = cache_root or prepared_dir()
    out = root / f"{source.dataset.replace(':', '-')}-{key[:12]}"
    if (out / MANIFEST).exists() and not force:
        return PreparedDataset(out, json.loads((out / MANIFEST).read_text()), cached=True)
    t0 = time.time()
    manifest = (_run_pipeline if engine == "ray" else _run_local)(cfg, source, out, key)
    manifest["prep_seconds"] = round(time.time() - t0, 2)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    return PreparedDataset(out, manifest, cached=False)


# ---------------------------------------------------------------- Ray Data stages


def _parse_files(batch: pa.Table, fmt: FileFormat) -> pa.Table:
    """read_binary_files rows (whole files) -> INTERACTIONS; line order kept per file."""
    tables = []
    for blob in batch.column("bytes").to_pylist():
        text = blob.decode(fmt.encoding)
        tables.append(parse_lines(pa.array(text.split("\n"), pa.string()), fmt))
    return pa.concat_tables(tables) if tables else INTERACTIONS.empty_table()


def _min_rating(batch: pa.Table, threshold: float) -> pa.Table:
    return batch.filter(pc.greater_equal(batch["rating"], threshold))


def _drop(batch: pa.Table, bad_users: np.ndarray, bad_items: np.ndarray) -> pa.Table:
    keep = pc.and_(
        pc.invert(pc.is_in(batch["user"], pa.array(bad_users, pa.int64()))),
        pc.invert(pc.is_in(batch["item"], pa.array(bad_items, pa.int64()))),
    )
    return batch.filter(keep)


def _block_counts(batch: pa.Table) -> pa.Table:
    """Per-block interaction counts of each user and each item (one table, tagged)."""
    u = pc.value_counts(batch["user"])
    i = pc.value_counts(batch["item"])
    return pa.table(
        {
            "kind": pa.array(["user"] * len(u) + ["item"] * len(i), pa.string()),
            "key": pa.concat_arrays([u.field(0).cast(pa.int64()), i.field(0).cast(pa.int64())]),
            "count": pa.concat_arrays([u.field(1), i.field(1)]),
        }
    )


def _sum_counts(parts: list[pa.Table], kind: str) -> tuple[np.ndarray, np.ndarray]:
    t = pa.concat_tables(parts)
    t = t.filter(pc.equal(t["kind"], kind)).group_by("key").aggregate([("count", "sum")])
    return t["key"].to_numpy(), t["count_sum"].to_numpy()


def _user_sequences(batch: pa.Table) -> pa.Table:
    """One block holding whole users -> one row per user, chronological (ts, then item id)."""
    if batch.num_rows == 0:
        return pa.table(
            {
                "user": pa.array([], pa.int64()),
                "items": pa.array([], pa.list_(pa.int64())),
                "ts": pa.array([], pa.list_(pa.int64())),
                "ratings": pa.array([], pa.list_(pa.float32())),
            }
        )
    t = batch.sort_by([("user", "ascending"), ("ts", "ascending"), ("item", "ascending")])
    users = t["user"].to_numpy()
    starts = np.concatenate([[0], np.flatnonzero(np.diff(users)) + 1])
    offsets = pa.array(np.concatenate([starts, [len(users)]]).astype(np.int32))
    return pa.table(
        {
            "user": pa.array(users[starts]),
            "items": pa.ListArray.from_arrays(offsets, t["item"].combine_chunks()),
            "ts": pa.ListArray.from_arrays(offsets, t["ts"].combine_chunks()),
            "ratings": pa.ListArray.from_arrays(offsets, t["rating"].combine_chunks()),
        }
    )


def _run_pipeline(cfg: DataConfig, source: Source, out: Path, key: str) -> dict[str, Any]:
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one line per stage is noise here

    if source.kind == "parquet":
        ds = ray.data.read_parquet(source.files)
    else:
        ds = ray.data.read_binary_files(source.files).map_batches(
            _parse_files, batch_size=1, batch_format="pyarrow", fn_kwargs={"fmt": source.fmt}
        )
    if cfg.min_rating is not None:
        ds = ds.map_batches(_min_rating, batch_format="pyarrow", fn_kwargs={"threshold": cfg.min_rating})
    ds = ds.materialize()
    raw = ds.count()

    # Iterative k-core: dropping items can push users under the threshold and back.
    # Counts are per-block value_counts (a map, no shuffle) summed on the driver.
    iterations = 0
    for iterations in range(1, 101):  # noqa: B007 (the count is read after the loop)
        parts = ray.get(ds.map_batches(_block_counts, batch_format="pyarrow").to_arrow_refs())
        ucount, icount = _sum_counts(parts, "user"), _sum_counts(parts, "item")
        bad_u = ucount[0][ucount[1] < cfg.min_user_interactions]
        bad_i = icount[0][icount[1] < cfg.min_item_interactions]
        if len(bad_u) == 0 and len(bad_i) == 0:
            break
        ds = ds.map_batches(_drop, batch_format="pyarrow", fn_kwargs={"bad_users": bad_u, "bad_items": bad_i})
        ds = ds.materialize()
    kept = ds.count()
    if kept == 0:
        raise ValueError(
            f"{source.dataset}: no interactions left after the k-core filter "
            f"(users >= {cfg.min_user_interactions}, items >= {cfg.min_item_interactions})"
        )

    num_blocks = max(1, min(64, kept // 200_000 + 1))
    seqs = ds.repartition(num_blocks, keys=["user"]).map_batches(
        _user_sequences, batch_size=None, batch_format="pyarrow"
    )
    table = pa.concat_tables(ray.get(seqs.to_arrow_refs()))
    table = _merge_split_users(table)
    return _write_outputs(cfg, source, table, out, key, raw_interactions=raw, kcore_iterations=iterations)


def _merge_split_users(table: pa.Table) -> pa.Table:
    """Safety net: if Ray split one user's rows over two blocks, merge them back."""
    users = table["user"].to_numpy()
    if len(np.unique(users)) == len(users):
        return table
    flat = pa.table(
        {
            "user": np.repeat(users, pc.list_value_length(table["items"]).to_numpy()),
            "item": pc.list_flatten(table["items"]),
            "ts": pc.list_flatten(table["ts"]),
            "rating": pc.list_flatten(table["ratings"]),
        }
    )
    return _user_sequences(flat)


def _write_outputs(
    cfg: DataConfig, source: Source, table: pa.Table, out: Path, key: str, raw_interactions: int, kcore_iterations: int
) -> dict[str, Any]:
    table = table.sort_by("user")
    lengths = pc.list_value_length(table["items"]).to_numpy()
    flat_items = pc.list_flatten(table["items"]).to_numpy()
    item_ids, item_idx = np.unique(flat_items, return_inverse=True)  # vocabulary sorted by original id
    item_idx = (item_idx + 1).astype(np.int32)  # 0 is padding
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    items = pa.ListArray.from_arrays(pa.array(offsets), pa.array(item_idx))
    last = offsets[1:] - 1
    seq = pa.table(
        {
            "user_idx": pa.array(np.arange(table.num_rows, dtype=np.int32)),
            "user_id": table["user"],
            "items": items,  # full chronological sequence, item_idx space
            "ts": table["ts"],
            "ratings": table["ratings"],
            "valid_item": pa.array(item_idx[last - 1]),  # second-last
            "test_item": pa.array(item_idx[last]),  # last
        }
    )
    # Training popularity: all but each user's last two items.
    train_mask = np.ones(len(item_idx), dtype=bool)
    train_mask[last] = False
    train_mask[last - 1] = False
    train_counts = np.bincount(item_idx[train_mask], minlength=len(item_ids) + 1)[1:]
    titles: dict[int, str] = {}
    if source.data_dir and source.dataset.startswith("ml-"):
        titles = read_movie_titles(Path(source.data_dir), source.dataset)
    columns = {
        "item_idx": pa.array(np.arange(1, len(item_ids) + 1, dtype=np.int32)),
        "item_id": pa.array(item_ids),
        "train_count": pa.array(train_counts.astype(np.int64)),
        "title": pa.array([titles.get(int(i), "") for i in item_ids], pa.string()),
    }
    content_stats: dict[str, Any] | None = None
    if source.content is not None:
        columns["text"], columns["attributes"], content_stats = align_content(
            source.content, item_ids, cfg.items.min_coverage
        )
    items_table = pa.table(columns)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    pq.write_table(seq, tmp / SEQUENCES, row_group_size=50_000)
    pq.write_table(items_table, tmp / ITEMS)
    manifest = {
        "format_version": PREP_VERSION,
        "dataset": source.dataset,
        "config_hash": key,
        "data_config": {k: v for k, v in to_dict(cfg).items() if k != "synthetic"}
        | ({"synthetic": to_dict(cfg.synthetic)} if source.kind == "parquet" else {}),
        "source_files": [os.path.basename(f) for f in source.files],
        "source_fingerprint": source.fingerprint,
        "notice": source.notice,
        "split": "leave_one_out: items[-1] = test, items[-2] = valid, items[:-2] = train",
        "tie_break": "chronological by timestamp, ties by original item id",
        "raw_interactions": int(raw_interactions),
        "num_interactions": int(len(item_idx)),
        "num_users": int(table.num_rows),
        "num_items": int(len(item_ids)),
        "kcore_iterations": int(kcore_iterations),
        "seq_len": {
            "min": int(lengths.min()),
            "mean": round(float(lengths.mean()), 2),
            "median": float(np.median(lengths)),
            "max": int(lengths.max()),
        },
        "item_ids": [int(i) for i in item_ids],  # item_idx i+1 <-> original id item_ids[i]
        "item_content": content_stats,  # None: no text or attributes (items.parquet has ids only)
        "files": {"sequences": SEQUENCES, "items": ITEMS},
        "created_unix": int(time.time()),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return manifest


def source_summary(src: Source) -> dict[str, Any]:
    out = asdict(replace(src, content=None))
    out["content_files"] = src.content.files if src.content else []
    return out


# ---------------------------------------------------------------- in-process path


def kcore_local(table: pa.Table, min_user: int, min_item: int) -> tuple[pa.Table, int]:
    """The same iterative k-core filter as the Ray pipeline, on one pyarrow table."""
    iterations = 0
    for iterations in range(1, 101):  # noqa: B007 (the count is read after the loop)
        (uk, uc), (ik, ic) = _sum_counts([_block_counts(table)], "user"), _sum_counts([_block_counts(table)], "item")
        bad_u, bad_i = uk[uc < min_user], ik[ic < min_item]
        if len(bad_u) == 0 and len(bad_i) == 0:
            break
        table = _drop(table, bad_u, bad_i)
    return table, iterations


def _run_local(cfg: DataConfig, source: Source, out: Path, key: str) -> dict[str, Any]:
    """The Ray pipeline's stages in-process, on the same source files."""
    if source.kind == "parquet":
        table = pa.concat_tables([pq.read_table(f) for f in source.files])
    else:
        blobs = pa.table({"bytes": pa.array([Path(f).read_bytes() for f in source.files], pa.binary())})
        table = _parse_files(blobs, source.fmt)
    return _stages_local(cfg, source, table, out, key)


def _stages_local(cfg: DataConfig, source: Source, table: pa.Table, out: Path, key: str) -> dict[str, Any]:
    """Rating filter, k-core, per-user sequences and outputs on one in-memory table."""
    raw = table.num_rows
    if cfg.min_rating is not None:
        table = _min_rating(table, cfg.min_rating)
    table, iterations = kcore_local(table, cfg.min_user_interactions, cfg.min_item_interactions)
    if table.num_rows == 0:
        raise ValueError(
            f"{source.dataset}: no interactions left after the k-core filter "
            f"(users >= {cfg.min_user_interactions}, items >= {cfg.min_item_interactions})"
        )
    return _write_outputs(
        cfg, source, _user_sequences(table), out, key, raw_interactions=raw, kcore_iterations=iterations
    )


def prepare_local(cfg: DataConfig, table: pa.Table, out: Path) -> PreparedDataset:
    """Prepare an INTERACTIONS table in-process (no Ray): for tests and small tools.

    Same stages and output format as the Ray Data pipeline; an integration test
    checks that both produce identical sequences.
    """
    raw = table.num_rows
    source = Source(cfg.dataset, "table", [], None, f"table:{raw}")
    if cfg.dataset == "synthetic":
        source.content = synthetic_content(cfg)
    key = config_hash({"local": True, "rows": raw, "cfg": to_dict(cfg)})
    return PreparedDataset(out, _stages_local(cfg, source, table, out, key), cached=False)
