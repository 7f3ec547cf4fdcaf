"""Item content: what a catalog knows of an item besides its ID (text, categorical attributes).

Every reader returns one pyarrow schema, `CONTENT`: `item` (the dataset's original item id),
`text` (null when the source has none), `attributes` (a list of strings, each `<kind>:<value>`,
empty when none). Preparation aligns it with the item vocabulary (`align_content`) and writes
it into `items.parquet` beside the sequences.

Sources:
* MovieLens-100k `u.item` (Latin-1, `|`): title with year as text; genres and decade as attributes.
* MovieLens-1M `movies.dat` (Latin-1, `::`): the same.
* MovieLens-20m/25m `movies.csv` (UTF-8): the same.
* Amazon S3-Rec `sasrec/<Name>_item2attributes.json`: `{"<item id>": [attribute id, ...]}`, brand
  and category path mapped to integers by S3-Rec (the names are not in the file), so attributes
  only; the ids are those of `sasrec/<Name>.txt`.
* A user's own Parquet or CSV: an id column plus any text and attribute columns, named in config.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lmrec.data.config import ItemsConfig

CONTENT = pa.schema([("item", pa.int64()), ("text", pa.string()), ("attributes", pa.list_(pa.string()))])
ML100K_GENRES = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Film-Noir Horror "
    "Musical Mystery Romance Sci-Fi Thriller War Western"
).split()
_YEAR = re.compile(r"\((\d{4})\)\s*$")


class ItemContentError(ValueError):
    """An item content source that cannot be used: missing, malformed, or not this dataset's."""


@dataclass
class ContentSource:
    """Resolved item content of a dataset: its table, the files it came from, and how."""

    table: pa.Table
    files: list[str]
    kind: str  # "movielens", "s3rec" or "user"
    notes: dict[str, Any] = field(default_factory=dict)


def _content(ids: list[int], texts: list[str | None], attrs: list[list[str]]) -> pa.Table:
    return pa.table(
        [pa.array(ids, pa.int64()), pa.array(texts, pa.string()), pa.array(attrs, pa.list_(pa.string()))],
        schema=CONTENT,
    )


def _movie(title: str, genres: list[str]) -> tuple[str, list[str]]:
    """Text "<title>. Genres: a, b" and attributes genre:<g>..., decade:<d>s (from the title's year)."""
    attrs = [f"genre:{g}" for g in genres]
    year = _YEAR.search(title)
    if year:
        attrs.append(f"decade:{int(year.group(1)) // 10 * 10}s")
    text = f"{title}. Genres: {', '.join(genres)}" if genres else title
    return text, attrs


def _movies(rows: list[tuple[str, str, list[str]]]) -> pa.Table:
    """(id, title, genres) rows -> CONTENT, via `_movie`."""
    pairs = [_movie(title, genres) for _, title, genres in rows]
    return _content([int(r[0]) for r in rows], [p[0] for p in pairs], [p[1] for p in pairs])


def _latin1_fields(path: str | Path, sep: str, n_fields: int) -> list[list[str]]:
    """The non-blank lines of a Latin-1 MovieLens file, split; a line with another field count fails."""
    out = []
    for n, line in enumerate(Path(path).read_bytes().decode("latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(sep)
        if len(parts) != n_fields:
            raise ItemContentError(f"{path}: line {n} has {len(parts)} fields, expected {n_fields}")
        out.append(parts)
    return out


def read_ml100k_items(path: str | Path) -> pa.Table:
    """`u.item`: id|title|release date|video release date|IMDb URL|19 genre flags (Latin-1)."""
    rows = _latin1_fields(path, "|", 5 + len(ML100K_GENRES))
    return _movies([(p[0], p[1], [g for g, f in zip(ML100K_GENRES, p[5:]) if f.strip() == "1"]) for p in rows])


def read_ml1m_items(path: str | Path) -> pa.Table:
    """`movies.dat`: id::title::genre|genre (Latin-1)."""
    return _movies([(p[0], p[1], [g for g in p[2].split("|") if g]) for p in _latin1_fields(path, "::", 3)])


def read_movielens_csv_items(path: str | Path) -> pa.Table:
    """`movies.csv` of ml-20m/25m: movieId,title,genres (UTF-8, quoted)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [
            (r["movieId"], r["title"], [g for g in r["genres"].split("|") if g and g != "(no genres listed)"])
            for r in csv.DictReader(fh)
        ]
    return _movies(rows)


def read_s3rec_attributes(path: str | Path) -> pa.Table:
    """S3-Rec `<Name>_item2attributes.json`: attributes `attr:<id>`, no text."""
    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ItemContentError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ItemContentError(f"{path}: expected an object {{item id: [attribute id, ...]}}")
    ids, attrs = [], []
    for key, values in raw.items():
        if not isinstance(values, list):
            raise ItemContentError(f"{path}: item {key!r} maps to {type(values).__name__}, expected a list")
        ids.append(int(key))
        attrs.append([f"attr:{int(v)}" for v in values])
    return _content(ids, [None] * len(ids), attrs)


def read_user_items(cfg: ItemsConfig, path: str | Path) -> pa.Table:
    """A user's Parquet or CSV: `cfg.id_column`, text columns joined with ". ", attribute columns.

    An attribute column holds a scalar (one attribute) or a list (several); each value becomes
    `<column>:<value>`.
    """
    path = Path(path)
    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    missing = [c for c in [cfg.id_column, *cfg.text_columns, *cfg.attribute_columns] if c not in table.column_names]
    if missing:
        raise ItemContentError(f"{path}: no column(s) {missing}; it has {table.column_names}")
    ids = table.column(cfg.id_column).to_pylist()
    if any(i is None for i in ids):
        raise ItemContentError(f"{path}: column {cfg.id_column!r} has empty ids")
    texts: list[str | None] = []
    text_cols = [table.column(c).to_pylist() for c in cfg.text_columns]
    for row in zip(*text_cols) if text_cols else ([] for _ in ids):
        parts = [str(v).strip() for v in row if v is not None and str(v).strip()]
        texts.append(". ".join(parts) if parts else None)
    attr_cols = {c: table.column(c).to_pylist() for c in cfg.attribute_columns}
    attrs: list[list[str]] = []
    for i in range(len(ids)):
        row_attrs = []
        for c, values in attr_cols.items():
            v = values[i]
            for x in v if isinstance(v, list) else [v]:
                if x is not None and str(x) != "":
                    row_attrs.append(f"{c}:{x}")
        attrs.append(row_attrs)
    return _content([int(i) for i in ids], texts, attrs)


def resolve_content(cfg: ItemsConfig, dataset: str, data_dir: Path | None) -> ContentSource | None:
    """The item content for `dataset` under `cfg`, or None (`source: none`, or `auto` with none)."""
    if cfg.source == "none":
        return None
    if cfg.source != "auto":
        path = Path(cfg.source).expanduser()
        if not path.is_absolute() and data_dir is not None and not path.exists():
            path = data_dir / path
        if not path.exists():
            raise ItemContentError(f"items.source: file {cfg.source!r} does not exist")
        return ContentSource(read_user_items(cfg, path), [str(path)], "user")
    if data_dir is None:
        return None
    if dataset.startswith("ml-"):
        base = data_dir / "movielens" / dataset
        for name, reader in (
            ("u.item", read_ml100k_items),
            ("movies.dat", read_ml1m_items),
            ("movies.csv", read_movielens_csv_items),
        ):
            if (base / name).exists():
                return ContentSource(reader(base / name), [str(base / name)], "movielens")
        return None
    if dataset.startswith("sasrec:"):
        path = data_dir / "sasrec" / f"{dataset.split(':', 1)[1]}_item2attributes.json"
        if path.exists():
            return ContentSource(read_s3rec_attributes(path), [str(path)], "s3rec")
    return None


def align_content(
    content: ContentSource, item_ids: np.ndarray, min_coverage: float
) -> tuple[pa.Array, pa.Array, dict[str, Any]]:
    """Text and attributes in vocabulary order (item_idx 1..N <-> `item_ids`), and counts.

    Fails, naming the file and the count, when fewer than `min_coverage` of the dataset's items
    are in the content source: that is a file of another dataset, or of other ids.
    """
    table = content.table
    ids = table.column("item").to_numpy()
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise ItemContentError(f"{content.files}: {len(dup)} duplicate item id(s), e.g. {dup[:5].tolist()}")
    pos = {int(i): k for k, i in enumerate(ids)}
    rows = [pos.get(int(i), -1) for i in item_ids]
    unmatched = sum(r < 0 for r in rows)
    coverage = 1 - unmatched / max(1, len(item_ids))
    if coverage < min_coverage:
        raise ItemContentError(
            f"{', '.join(content.files)}: {unmatched} of the dataset's {len(item_ids)} item ids are not in it "
            f"(coverage {coverage:.1%} < items.min_coverage {min_coverage:.0%}): is it this dataset's item file?"
        )
    texts_all = table.column("text").to_pylist()
    attrs_all = table.column("attributes").to_pylist()
    texts = [texts_all[r] if r >= 0 else None for r in rows]
    attrs = [attrs_all[r] if r >= 0 else [] for r in rows]
    vocab = {a for row in attrs for a in row}
    stats = {
        "source": content.kind,
        "files": [Path(f).name for f in content.files],
        "items_in_source": int(table.num_rows),
        "matched": int(len(item_ids) - unmatched),
        "unmatched": int(unmatched),
        "catalog_only": int(len(set(pos) - {int(i) for i in item_ids})),  # in the source, no interactions
        "with_text": int(sum(t is not None and t != "" for t in texts)),
        "without_text": int(sum(t is None or t == "" for t in texts)),
        "with_attributes": int(sum(bool(a) for a in attrs)),
        "attribute_vocab": len(vocab),
        **content.notes,
    }
    return pa.array(texts, pa.string()), pa.array(attrs, pa.list_(pa.string())), stats
