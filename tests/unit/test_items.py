"""Item content: readers on the real files under ../shared/data, a user's own file, the items table
that preparation writes beside the sequences, and the errors for files that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmrec.config import ConfigError, load_config
from lmrec.data.config import DataConfig, ItemsConfig
from lmrec.data.items import (
    ItemContentError,
    align_content,
    read_ml1m_items,
    read_ml100k_items,
    read_s3rec_attributes,
    read_user_items,
    resolve_content,
)
from lmrec.data.prepare import cache_key, prepare_dataset, resolve_source
from lmrec.paths import data_dir

SHARED = data_dir()
ML100K = SHARED / "movielens" / "ml-100k" / "u.item"
ML1M = SHARED / "movielens" / "ml-1m" / "movies.dat"
BEAUTY = SHARED / "sasrec" / "Beauty_item2attributes.json"


def _row(table: pa.Table, item: int) -> dict:
    ids = table.column("item").to_pylist()
    return table.slice(ids.index(item), 1).to_pylist()[0]


@pytest.mark.skipif(not ML100K.exists(), reason="MovieLens-100k is not under the data directory")
def test_ml100k_u_item_titles_years_and_genre_flags() -> None:
    t = read_ml100k_items(ML100K)
    assert t.num_rows == 1682 and t.column("item").to_pylist() == list(range(1, 1683))
    toy = _row(t, 1)
    assert toy["text"] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert toy["attributes"] == ["genre:Animation", "genre:Children's", "genre:Comedy", "decade:1990s"]
    genres = {a for row in t.column("attributes").to_pylist() for a in row if a.startswith("genre:")}
    assert len(genres) == 19  # every flag of u.genre is used by some film
    assert all(row for row in t.column("attributes").to_pylist())


@pytest.mark.skipif(not ML1M.exists(), reason="MovieLens-1M movies.dat is not under the data directory")
def test_ml1m_movies_dat_is_latin1_with_genres() -> None:
    t = read_ml1m_items(ML1M)
    assert t.num_rows == 3883
    assert _row(t, 1)["text"] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    texts = t.column("text").to_pylist()
    assert any("é" in x for x in texts)  # Latin-1 accents decoded, not mangled
    assert not any("\ufffd" in x for x in texts)
    assert {"genre:Film-Noir", "genre:Sci-Fi", "decade:1910s"} <= {
        a for r in t.column("attributes").to_pylist() for a in r
    }


@pytest.mark.skipif(not BEAUTY.exists(), reason="the S3-Rec Beauty attributes are not under the data directory")
def test_s3rec_attributes_cover_every_beauty_item() -> None:
    t = read_s3rec_attributes(BEAUTY)
    assert t.num_rows == 12101 and sorted(t.column("item").to_pylist()) == list(range(1, 12102))
    counts = [len(a) for a in t.column("attributes").to_pylist()]
    assert np.mean(counts) == pytest.approx(3.72, abs=0.01)  # SOURCES.md §3d
    assert t.column("text").null_count == t.num_rows  # ids only: S3-Rec left the names out
    assert _row(t, 4)["attributes"][:3] == ["attr:1", "attr:2", "attr:3"]


@pytest.mark.skipif(not (ML100K.exists() and BEAUTY.exists()), reason="needs ml-100k and Beauty")
def test_prepare_writes_content_beside_the_sequences_for_real_datasets(tmp_path: Path) -> None:
    for dataset, kind, with_text in (("ml-100k", "movielens", True), ("sasrec:Beauty", "s3rec", False)):
        cfg = load_config(DataConfig, None, [f"dataset={dataset}"])
        prepared = prepare_dataset(cfg, cache_root=tmp_path, engine="local")
        stats = prepared.manifest["item_content"]
        assert stats["source"] == kind and stats["unmatched"] == 0 and stats["matched"] == prepared.num_items
        items = pq.read_table(prepared.path / "items.parquet")
        assert items.column("item_id").to_pylist() == prepared.manifest["item_ids"]
        assert stats["with_attributes"] == prepared.num_items
        assert (stats["with_text"] == prepared.num_items) is with_text and stats["without_text"] == (
            0 if with_text else prepared.num_items
        )
    # ml-100k: items cut by the 5-core filter are in u.item but have no interactions here
    ml = load_config(DataConfig, None, ["dataset=ml-100k"])
    assert prepare_dataset(ml, cache_root=tmp_path, engine="local").manifest["item_content"]["catalog_only"] > 0


def _synthetic(tmp_path: Path, *overrides: str) -> DataConfig:
    return load_config(
        DataConfig,
        None,
        [
            "dataset=synthetic",
            "synthetic.num_users=80",
            "synthetic.num_items=40",
            "synthetic.num_clusters=4",
            *overrides,
        ],
    )


def _user_file(path: Path, ids: list[int], fmt: str) -> Path:
    table = pa.table(
        {
            "item_id": ids,
            "name": [f"item {i}" if i % 5 else None for i in ids],  # every fifth has no text
            "blurb": [f"blurb {i}" for i in ids],
            "brand": [f"b{i % 3}" for i in ids],
            "tags": [[f"t{i % 2}", "all"] for i in ids],
        }
    )
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table.drop(["tags"]), path)
    return path


def test_a_users_parquet_and_csv_with_text_and_attribute_columns(tmp_path: Path) -> None:
    cfg = ItemsConfig(
        source="x.parquet", text_columns=["name", "blurb"], attribute_columns=["brand", "tags"], id_column="item_id"
    )
    t = read_user_items(cfg, _user_file(tmp_path / "items.parquet", [1, 2, 5], "parquet"))
    assert _row(t, 1) == {"item": 1, "text": "item 1. blurb 1", "attributes": ["brand:b1", "tags:t1", "tags:all"]}
    assert _row(t, 5)["text"] == "blurb 5"  # a missing text column is skipped, not "None"
    csv_cfg = ItemsConfig(source="x.csv", text_columns=["name"], attribute_columns=["brand"])
    c = read_user_items(csv_cfg, _user_file(tmp_path / "items.csv", [1, 2, 5], "csv"))
    assert _row(c, 2) == {"item": 2, "text": "item 2", "attributes": ["brand:b2"]}
    assert _row(c, 5)["text"] is None
    with pytest.raises(ItemContentError, match=r"no column\(s\) \['genre'\]"):
        read_user_items(ItemsConfig(source="x.csv", attribute_columns=["genre"]), tmp_path / "items.csv")


def test_prepare_with_a_user_item_file_counts_items_without_text(tmp_path: Path, lmrec_home: Path) -> None:
    path = _user_file(tmp_path / "catalog.parquet", list(range(0, 60)), "parquet")
    cfg = _synthetic(tmp_path, f"items.source={path}", "items.text_columns=[name]", "items.attribute_columns=[brand]")
    prepared = prepare_dataset(cfg, cache_root=tmp_path / "prep", engine="local")
    stats = prepared.manifest["item_content"]
    ids = prepared.manifest["item_ids"]
    assert stats["source"] == "user" and stats["matched"] == len(ids) and stats["catalog_only"] == 60 - len(ids)
    assert stats["without_text"] == sum(1 for i in ids if i % 5 == 0)  # they keep attributes and ID
    items = pq.read_table(prepared.path / "items.parquet").to_pylist()
    assert all(r["attributes"] == [f"brand:b{r['item_id'] % 3}"] for r in items)
    # the content is part of the cache key: another text column is another prepared dataset
    other = _synthetic(
        tmp_path, f"items.source={path}", "items.text_columns=[blurb]", "items.attribute_columns=[brand]"
    )
    assert cache_key(other, resolve_source(other)) != cache_key(cfg, resolve_source(cfg))
    assert prepare_dataset(other, cache_root=tmp_path / "prep", engine="local").path != prepared.path
    none = _synthetic(tmp_path, "items.source=none")
    assert prepare_dataset(none, cache_root=tmp_path / "prep", engine="local").manifest["item_content"] is None
    # synthetic data brings its own content: text and an attribute naming each item's hidden cluster
    own = prepare_dataset(_synthetic(tmp_path), cache_root=tmp_path / "prep", engine="local")
    assert own.manifest["item_content"]["source"] == "synthetic"
    rows = pq.read_table(own.path / "items.parquet").to_pylist()
    assert all(r["text"] and len(r["attributes"]) == 1 and r["attributes"][0].startswith("cluster:") for r in rows)


def test_a_file_of_other_ids_fails_naming_the_file_and_the_count(tmp_path: Path, lmrec_home: Path) -> None:
    path = _user_file(tmp_path / "other.parquet", list(range(1000, 1050)), "parquet")
    cfg = _synthetic(tmp_path, f"items.source={path}", "items.attribute_columns=[brand]")
    with pytest.raises(ItemContentError, match=r"other\.parquet: (\d+) of the dataset's \1 item ids are not in it"):
        prepare_dataset(cfg, cache_root=tmp_path / "prep", engine="local")
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps({"1": [1], "2": [2]}))
    table = pa.concat_tables([read_s3rec_attributes(dup)] * 2)
    from lmrec.data.items import ContentSource

    with pytest.raises(ItemContentError, match="2 duplicate item id"):
        align_content(ContentSource(table, [str(dup)], "s3rec"), np.array([1, 2]), 0.5)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ItemContentError, match="bad.json: expected an object"):
        read_s3rec_attributes(bad)


def test_items_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="items.source"):
        load_config(DataConfig, None, ["items.source=catalog.txt"])
    with pytest.raises(ConfigError, match="items.text_columns"):
        load_config(DataConfig, None, ["items.source=catalog.csv"])
    with pytest.raises(ConfigError, match="items.min_coverage"):
        load_config(DataConfig, None, ["items.min_coverage=2"])
    cfg = ItemsConfig(source=str(tmp_path / "missing.csv"), text_columns=["t"])
    with pytest.raises(ItemContentError, match="does not exist"):
        resolve_content(cfg, "synthetic", tmp_path)
