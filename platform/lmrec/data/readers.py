"""Readers for MovieLens (100k, 1m, 20m, 25m) and SASRec `user item` files.

Every reader yields one pyarrow table schema, `INTERACTIONS`: user, item, ts, rating.
Parsing is vectorised (pyarrow.compute) and shared by the Ray Data pipeline, which
applies `parse_lines` to `ray.data.read_text` batches, and by `read_interactions`,
the in-process reader used by tests and small tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

INTERACTIONS = pa.schema(
    [
        ("user", pa.int64()),
        ("item", pa.int64()),
        ("ts", pa.int64()),  # seconds, or line order for formats without time
        ("rating", pa.float32()),
    ]
)


@dataclass(frozen=True)
class FileFormat:
    """How one text format is laid out."""

    name: str
    separator: str
    encoding: str = "utf-8"
    header: bool = False
    has_rating: bool = True  # SASRec files carry no rating/timestamp: ts = line order


MOVIELENS_100K = FileFormat("ml-100k", "\t")
MOVIELENS_1M = FileFormat("ml-1m", "::", encoding="latin-1")
MOVIELENS_CSV = FileFormat("ml-csv", ",", header=True)  # ml-20m / ml-25m ratings.csv
SASREC = FileFormat("sasrec", " ", has_rating=False)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a named dataset's interaction file lives and how to read it."""

    name: str
    relative_path: str  # under the data directory
    fmt: FileFormat
    url: str | None = None  # official download (zip)
    md5: str | None = None  # GroupLens publishes MD5 sidecars next to each zip
    member: str | None = None  # path of the file inside the zip


GROUPLENS = "https://files.grouplens.org/datasets/movielens"

MOVIELENS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec(
        "ml-100k",
        "movielens/ml-100k/u.data",
        MOVIELENS_100K,
        f"{GROUPLENS}/ml-100k.zip",
        "0e33842e24a9c977be4e0107933c0723",
        "ml-100k/u.data",
    ),
    "ml-1m": DatasetSpec(
        "ml-1m",
        "movielens/ml-1m/ratings.dat",
        MOVIELENS_1M,
        f"{GROUPLENS}/ml-1m.zip",
        "c4d9eecfca2ab87c1945afe126590906",
        "ml-1m/ratings.dat",
    ),
    "ml-20m": DatasetSpec(
        "ml-20m",
        "movielens/ml-20m/ratings.csv",
        MOVIELENS_CSV,
        f"{GROUPLENS}/ml-20m.zip",
        "cd245b17a1ae2cc31bb14903e1204af3",
        "ml-20m/ratings.csv",
    ),
    "ml-25m": DatasetSpec(
        "ml-25m",
        "movielens/ml-25m/ratings.csv",
        MOVIELENS_CSV,
        f"{GROUPLENS}/ml-25m.zip",
        "6b51fb2759a8657d3bfcbfc42b592ada",
        "ml-25m/ratings.csv",
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    """Spec for `ml-*` or `sasrec:<Name>` (file `sasrec/<Name>.txt`)."""
    if name in MOVIELENS:
        return MOVIELENS[name]
    if name.startswith("sasrec:"):
        stem = name.split(":", 1)[1]
        return DatasetSpec(name, f"sasrec/{stem}.txt", SASREC)
    raise ValueError(f"no file reader for dataset {name!r}")


class ParseError(ValueError):
    """A line of an interaction file does not match its format."""


def parse_lines(lines: pa.Array | pa.ChunkedArray, fmt: FileFormat, first_line_no: int = 0) -> pa.Table:
    """Text lines -> INTERACTIONS table. Blank lines and a CSV header are skipped.

    `first_line_no` is the index of the first line in the file; formats without a
    timestamp use the line index as `ts`, which keeps the file's chronological order.
    """
    lines = pa.chunked_array([lines]) if isinstance(lines, pa.Array) else lines
    lines = pc.utf8_rtrim_whitespace(lines)
    line_no = pa.array(range(first_line_no, first_line_no + len(lines)), pa.int64())
    keep = pc.not_equal(pc.utf8_length(lines), 0)
    if fmt.header:
        keep = pc.and_(keep, pc.invert(pc.starts_with(lines, "userId")))
    lines = pc.filter(lines, keep)
    line_no = pc.filter(line_no, keep)
    if len(lines) == 0:
        return INTERACTIONS.empty_table()
    parts = pc.split_pattern(lines, fmt.separator)
    ncols = pc.list_value_length(parts)
    want = 4 if fmt.has_rating else 2
    bad = pc.less(ncols, want)
    if pc.any(bad).as_py():
        idx = pc.index(bad, True).as_py()
        raise ParseError(
            f"{fmt.name}: line {line_no[idx].as_py() + 1} has {ncols[idx].as_py()} fields, expected {want}: "
            f"{lines[idx].as_py()[:80]!r}"
        )

    def col(i: int, typ: pa.DataType) -> pa.Array:
        values = pc.list_element(parts, i)
        try:
            return pc.cast(values, typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ParseError(f"{fmt.name}: column {i} is not {typ}: {exc}") from exc

    user = col(0, pa.int64())
    item = col(1, pa.int64())
    if fmt.has_rating:
        rating = col(2, pa.float32())
        ts = col(3, pa.int64())
    else:
        rating = pa.array(np.ones(len(lines), dtype=np.float32))
        ts = line_no
    return pa.table([user, item, ts, rating], schema=INTERACTIONS)


def read_interactions(path: str | Path, fmt: FileFormat) -> pa.Table:
    """Read a whole interaction file in-process (no Ray)."""
    text = Path(path).read_bytes().decode(fmt.encoding)
    lines = pa.array(text.split("\n"), pa.string())
    return parse_lines(lines, fmt)


def read_movie_titles(data_dir: Path, dataset: str) -> dict[int, str]:
    """Item id -> title for MovieLens (Latin-1 `u.item` / `movies.dat`, UTF-8 `movies.csv`)."""
    base = data_dir / "movielens" / dataset
    titles: dict[int, str] = {}
    if dataset == "ml-100k" and (base / "u.item").exists():
        for line in (base / "u.item").read_bytes().decode("latin-1").splitlines():
            parts = line.split("|")
            if len(parts) > 1:
                titles[int(parts[0])] = parts[1]
    elif dataset == "ml-1m" and (base / "movies.dat").exists():
        for line in (base / "movies.dat").read_bytes().decode("latin-1").splitlines():
            parts = line.split("::")
            if len(parts) > 1:
                titles[int(parts[0])] = parts[1]
    elif (base / "movies.csv").exists():
        import csv

        with open(base / "movies.csv", encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                titles[int(row["movieId"])] = row["title"]
    return titles
