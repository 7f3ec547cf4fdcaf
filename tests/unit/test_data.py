"""Readers, downloads (from a loopback HTTP server), synthetic generator, in-process preparation and batching."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lmrec.data.config import DataConfig, SyntheticConfig
from lmrec.data.download import DatasetNotFound, download_zip, locate_dataset
from lmrec.data.prepare import prepare_local
from lmrec.data.readers import (
    MOVIELENS_1M,
    MOVIELENS_100K,
    MOVIELENS_CSV,
    SASREC,
    DatasetSpec,
    ParseError,
    dataset_spec,
    read_interactions,
)
from lmrec.data.sequences import SequenceData, left_pad, shard_batches, train_examples, trim_padding
from lmrec.data.synthetic import _World, generate
from lmrec.paths import data_dir, lmrec_home


def test_readers_parse_each_format(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    (tmp_path / "ratings.dat").write_bytes("1::1193::5::978300760\n1::661::3::978302109\n".encode("latin-1"))
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n")
    (tmp_path / "b.txt").write_text("1 1\n1 2\n2 3\n")
    t = read_interactions(tmp_path / "u.data", MOVIELENS_100K)
    assert t.to_pylist()[0] == {"user": 196, "item": 242, "ts": 881250949, "rating": 3.0}
    t = read_interactions(tmp_path / "ratings.dat", MOVIELENS_1M)
    assert t.column("item").to_pylist() == [1193, 661] and t.column("ts").to_pylist() == [978300760, 978302109]
    t = read_interactions(tmp_path / "ratings.csv", MOVIELENS_CSV)
    assert t.to_pylist() == [{"user": 1, "item": 2, "ts": 1112486027, "rating": 3.5}]
    t = read_interactions(tmp_path / "b.txt", SASREC)
    assert t.column("ts").to_pylist() == [0, 1, 2]  # line order stands in for time


def test_bad_lines_are_reported_with_their_line_number(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::2::3::4\n1::2::3\n")
    with pytest.raises(ParseError, match="line 2"):
        read_interactions(tmp_path / "ratings.dat", MOVIELENS_1M)
    (tmp_path / "u.data").write_text("1\tx\t3\t4\n")
    with pytest.raises(ParseError):
        read_interactions(tmp_path / "u.data", MOVIELENS_100K)


def _zip_with(member: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr(member.rsplit("/", 1)[0] + "/README", b"readme")
    return buf.getvalue()


@dataclass
class _Mirror:
    """A loopback HTTP server standing in for GroupLens: `files` maps URL paths to bodies."""

    base_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Mirror]:
    # urllib honours *_proxy variables; loopback must never go through a proxy.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    files: dict[str, bytes] = {}
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield _Mirror(f"http://127.0.0.1:{server.server_address[1]}", files, requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused, as when offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_verifies_checksum_and_extracts(tmp_path: Path, mirror: _Mirror) -> None:
    blob = _zip_with("ml-100k/u.data", b"1\t2\t3\t4\n")
    mirror.files["/datasets/movielens/ml-100k.zip"] = blob
    url = f"{mirror.base_url}/datasets/movielens/ml-100k.zip"
    spec = DatasetSpec(
        "ml-100k", "movielens/ml-100k/u.data", MOVIELENS_100K, url, hashlib.md5(blob).hexdigest(), "ml-100k/u.data"
    )

    path = locate_dataset(spec, tmp_path / "data", download=True)
    assert path == tmp_path / "data" / "movielens" / "ml-100k" / "u.data"
    assert path.read_bytes() == b"1\t2\t3\t4\n" and (path.parent / "README").read_bytes() == b"readme"
    assert sorted(p.name for p in path.parent.iterdir()) == ["README", "u.data"]  # no temporary files left
    # present now: found again without a second request
    assert locate_dataset(spec, tmp_path / "data", download=True) == path
    assert mirror.requests == ["/datasets/movielens/ml-100k.zip"]

    bad = replace(spec, relative_path="movielens/x/u.data", md5="0" * 32)
    with pytest.raises(DatasetNotFound, match="checksum mismatch"):
        download_zip(bad, tmp_path / "other")
    assert list((tmp_path / "other" / "movielens" / "x").iterdir()) == []  # the download was discarded

    missing_member = replace(spec, relative_path="movielens/y/u.data", member="ml-100k/u.item")
    with pytest.raises(DatasetNotFound, match="does not contain ml-100k/u.item"):
        download_zip(missing_member, tmp_path / "other")


def test_official_specs_point_at_grouplens_with_md5() -> None:
    for name in ("ml-100k", "ml-1m", "ml-20m", "ml-25m"):
        spec = dataset_spec(name)
        assert spec.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert spec.md5 and len(spec.md5) == 32
    assert dataset_spec("ml-1m").md5 == "c4d9eecfca2ab87c1945afe126590906"


def test_offline_missing_dataset_says_where_to_put_files(tmp_path: Path, mirror: _Mirror) -> None:
    official = dataset_spec("ml-1m")
    for url in (
        f"http://127.0.0.1:{_closed_port()}/datasets/movielens/ml-1m.zip",  # no network: connection refused
        f"{mirror.base_url}/datasets/movielens/ml-1m.zip",  # a server without the file: HTTP 404
    ):
        with pytest.raises(DatasetNotFound) as info:
            locate_dataset(replace(official, url=url), tmp_path, download=True)
        msg = str(info.value)
        assert url in msg and "could not be downloaded" in msg
        assert "ratings.dat" in msg and "c4d9eecfca2ab87c1945afe126590906" in msg and "LMREC_DATA_DIR" in msg
        assert not (tmp_path / "movielens" / "ml-1m" / "ratings.dat").exists()
    assert mirror.requests == ["/datasets/movielens/ml-1m.zip"]
    with pytest.raises(DatasetNotFound, match="not found"):
        locate_dataset(dataset_spec("sasrec:Nope"), tmp_path, download=True)


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the cwd rule (`<cwd>/../shared/data`) finds nothing from here
    monkeypatch.setenv("LMREC_DATA_DIR", str(tmp_path / "env"))
    assert data_dir(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    assert data_dir() == (tmp_path / "env").resolve()
    # a symlinked data folder has one spelling, whichever rule finds it
    (tmp_path / "real" / "data").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    monkeypatch.setenv("LMREC_DATA_DIR", str(tmp_path / "link" / "data"))
    assert data_dir() == (tmp_path / "real" / "data").resolve() == data_dir(tmp_path / "link" / "data")
    monkeypatch.delenv("LMREC_DATA_DIR")
    # beside the checkout: ../shared/data, often itself a symlink (then resolved like the rules above)
    shared = Path(__file__).resolve().parents[3] / "shared" / "data"
    if shared.is_dir():
        assert data_dir() == shared.resolve() == data_dir(shared)
    else:
        assert data_dir() == lmrec_home() / "data"


def test_synthetic_is_deterministic_power_law_and_sequential() -> None:
    cfg = SyntheticConfig(num_users=500, num_items=300, num_clusters=10, mean_seq_len=20, seed=3)
    a, b = generate(cfg), generate(cfg)
    assert a.equals(b)
    items = a.column("item").to_numpy()
    counts = np.sort(np.bincount(items)[1:])[::-1]
    assert counts[:10].sum() > 5 * counts[-100:].sum()  # heavy head, long tail
    world = _World(cfg)
    clusters = world.cluster_of[items - 1]
    users = a.column("user").to_numpy()
    same_user = users[1:] == users[:-1]
    follow = (clusters[1:] == clusters[:-1]) | (clusters[1:] == world.successor[clusters[:-1]])
    # stay (0.5) + successor (0.4) + chance; far above the ~2/10 a random order would give
    assert follow[same_user].mean() > 0.8
    lengths = np.bincount(users)[1:]
    assert lengths.min() >= cfg.min_seq_len and lengths.max() <= cfg.max_seq_len


def _interactions(rows: list[tuple[int, int, int]]) -> pa.Table:
    u, i, t = zip(*rows)
    return pa.table(
        {
            "user": pa.array(u, pa.int64()),
            "item": pa.array(i, pa.int64()),
            "ts": pa.array(t, pa.int64()),
            "rating": pa.array([1.0] * len(rows), pa.float32()),
        }
    )


def test_prepare_local_kcore_order_ties_and_split(tmp_path: Path) -> None:
    rows = [
        (1, 10, 5),
        (1, 30, 1),
        (1, 20, 1),
        (1, 40, 9),  # tie at ts=1: item 20 before 30
        (2, 10, 1),
        (2, 20, 2),
        (2, 30, 3),
        (2, 40, 4),
        (3, 10, 1),
        (3, 99, 2),
        (3, 20, 3),  # item 99 has one interaction -> dropped, then user 3 has 2 < 3
    ]
    cfg = DataConfig(dataset="synthetic", min_user_interactions=3, min_item_interactions=2)
    prep = prepare_local(cfg, _interactions(rows), tmp_path / "p")
    m = prep.manifest
    assert m["num_users"] == 2 and m["num_items"] == 4 and m["item_ids"] == [10, 20, 30, 40]
    assert m["kcore_iterations"] >= 2 and m["raw_interactions"] == 11
    data = SequenceData.load(prep.path)
    # user 1 chronological: 20(ts1) 30(ts1) 10(ts5) 40(ts9) -> idx 2 3 1 4
    assert data.sequence(0).tolist() == [2, 3, 1, 4]
    assert data.history(0, "valid").tolist() == [2, 3] and data.target(0, "valid") == 1
    assert data.history(0, "test").tolist() == [2, 3, 1] and data.target(0, "test") == 4
    import pyarrow.parquet as pq

    seq = pq.read_table(prep.path / "sequences.parquet")
    assert seq.column("valid_item").to_pylist() == [1, 3] and seq.column("test_item").to_pylist() == [4, 4]


def test_prepare_dataset_local_engine_reads_files_without_ray(tmp_path: Path) -> None:
    # The in-process engine (what a Serve replica uses) on a MovieLens file: the same
    # stages as prepare_local on the parsed table, and cached under the dataset's key.
    import sys

    from lmrec.data.prepare import prepare_dataset

    rows = [
        (1, 10, 5),
        (1, 30, 1),
        (1, 20, 1),
        (1, 40, 9),
        (2, 10, 1),
        (2, 20, 2),
        (2, 30, 3),
        (2, 40, 4),
        (3, 10, 1),
        (3, 99, 2),
        (3, 20, 3),
    ]
    base = tmp_path / "data" / "movielens" / "ml-100k"
    base.mkdir(parents=True)
    (base / "u.data").write_text("".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in rows))
    cfg = DataConfig(
        dataset="ml-100k",
        data_dir=str(tmp_path / "data"),
        min_user_interactions=3,
        min_item_interactions=2,
        download=False,
    )
    ray_was_running = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    prep = prepare_dataset(cfg, cache_root=tmp_path / "cache", engine="local")
    assert not prep.cached and prep.manifest["dataset"] == "ml-100k"
    assert ray_was_running or not ("ray" in sys.modules and sys.modules["ray"].is_initialized())
    ref = prepare_local(
        DataConfig(dataset="ml-100k", min_user_interactions=3, min_item_interactions=2),
        read_interactions(base / "u.data", MOVIELENS_100K),
        tmp_path / "ref",
    )
    a, b = SequenceData.load(prep.path), SequenceData.load(ref.path)
    assert (a.items == b.items).all() and (a.offsets == b.offsets).all() and a.user_ids.tolist() == [1, 2]
    assert prep.manifest["item_ids"] == [10, 20, 30, 40] and prep.manifest["raw_interactions"] == 11
    again = prepare_dataset(cfg, cache_root=tmp_path / "cache", engine="local")
    assert again.cached and again.path == prep.path
    with pytest.raises(ValueError, match="engine"):
        prepare_dataset(cfg, cache_root=tmp_path / "cache", engine="spark")


def test_training_examples_windows_and_padding() -> None:
    items = np.arange(1, 13, dtype=np.int32)  # one user, 12 items: train part = 1..10
    data = SequenceData(items, np.array([0, 12]), np.ones(12, np.float32), np.arange(12), np.array([7]), 12, {})
    x, y = train_examples(data, max_len=4)
    assert x.tolist() == [[6, 7, 8, 9]] and y.tolist() == [[7, 8, 9, 10]]
    x, y = train_examples(data, max_len=4, sliding_window=True)
    assert x.tolist() == [[6, 7, 8, 9], [2, 3, 4, 5], [0, 0, 0, 1]]
    assert y.tolist() == [[7, 8, 9, 10], [3, 4, 5, 6], [0, 0, 0, 2]]
    assert left_pad([np.array([1, 2])], 4).tolist() == [[0, 0, 1, 2]]
    a, b = trim_padding(np.array([[0, 0, 1, 2], [0, 3, 4, 5]]), np.array([[0, 0, 2, 3], [0, 4, 5, 6]]))
    assert a.tolist() == [[0, 1, 2], [3, 4, 5]] and b.shape == (2, 3)


def test_shard_batches_cover_everything_in_lockstep() -> None:
    n, bs, world = 103, 8, 3
    shards = [shard_batches(n, bs, r, world, epoch=2, seed=1) for r in range(world)]
    assert len({s.shape for s in shards}) == 1  # same number of steps on every rank
    seen = np.concatenate([s.ravel() for s in shards])
    assert set(seen.tolist()) == set(range(n))
    again = shard_batches(n, bs, 1, world, epoch=2, seed=1)
    assert np.array_equal(again, shards[1])
    assert not np.array_equal(shard_batches(n, bs, 1, world, epoch=3, seed=1), shards[1])
