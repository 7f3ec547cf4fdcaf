"""Typed config of dataset selection, preparation and the synthetic generator."""

from __future__ import annotations

from pydantic import Field

from lmrec.config import ConfigModel, check

KNOWN_DATASETS = ("ml-100k", "ml-1m", "ml-20m", "ml-25m", "synthetic")


class SyntheticConfig(ConfigModel):
    """Power-law popularity + a hidden Markov chain over item clusters (learnable order)."""

    num_users: int = 2000
    num_items: int = 1000
    num_clusters: int = 20
    mean_seq_len: float = 30.0
    min_seq_len: int = 5
    max_seq_len: int = 200
    zipf_alpha: float = 1.0  # item popularity ~ 1 / rank^alpha
    stay_prob: float = 0.5  # P(next item from the same cluster)
    next_prob: float = 0.4  # P(next item from the cluster's designated successor)
    seed: int = 0

    def validate_config(self) -> None:
        check(self.num_users >= 1, "num_users", "must be >= 1")
        check(self.num_items >= 2, "num_items", "must be >= 2")
        check(1 <= self.num_clusters <= self.num_items, "num_clusters", "must be in [1, num_items]")
        check(self.min_seq_len >= 3, "min_seq_len", "must be >= 3 (leave-one-out needs train, valid, test)")
        check(self.max_seq_len >= self.min_seq_len, "max_seq_len", "must be >= min_seq_len")
        check(self.mean_seq_len >= self.min_seq_len, "mean_seq_len", "must be >= min_seq_len")
        check(self.zipf_alpha >= 0, "zipf_alpha", "must be >= 0")
        check(
            0 <= self.stay_prob and 0 <= self.next_prob and self.stay_prob + self.next_prob <= 1,
            "stay_prob",
            "stay_prob and next_prob must be >= 0 and sum to <= 1",
        )


class ItemsConfig(ConfigModel):
    """Item content (text, attributes) written beside the sequences as `items.parquet`.

    `source`: `auto` (the dataset's own item file when it has one: MovieLens `u.item` /
    `movies.dat` / `movies.csv`, Amazon S3-Rec `sasrec/<Name>_item2attributes.json`), `none`, or
    the path of a Parquet or CSV file (relative paths are tried under the data directory) with
    `id_column` plus the named text and attribute columns.
    """

    source: str = "auto"
    id_column: str = "item_id"
    text_columns: list[str] = Field(default_factory=list)
    attribute_columns: list[str] = Field(default_factory=list)
    min_coverage: float = 0.5  # fail when fewer of the dataset's items are in the source

    def validate_config(self) -> None:
        check(
            self.source in ("auto", "none") or self.source.endswith((".parquet", ".csv")),
            "source",
            f"must be 'auto', 'none' or a .parquet / .csv path, got {self.source!r}",
        )
        user_file = self.source not in ("auto", "none")
        check(
            not user_file or bool(self.text_columns or self.attribute_columns),
            "text_columns",
            "a user item file needs text_columns or attribute_columns (or both)",
        )
        check(0.0 <= self.min_coverage <= 1.0, "min_coverage", "must be in [0, 1]")


class DataConfig(ConfigModel):
    """Which interactions to read and how to turn them into leave-one-out sequences.

    `dataset` is one of ml-100k, ml-1m, ml-20m, ml-25m, synthetic, or `sasrec:<Name>`
    for `<data_dir>/sasrec/<Name>.txt` (`user item` lines in chronological order).
    """

    dataset: str = "ml-100k"
    data_dir: str | None = None  # None: LMREC_DATA_DIR, then ../shared/data
    min_user_interactions: int = 5  # k-core: users with fewer are dropped (iterated)
    min_item_interactions: int = 5  # k-core: items with fewer are dropped (iterated)
    min_rating: float | None = None  # None: every rating is an interaction (implicit)
    download: bool = True  # fetch missing MovieLens files from GroupLens when online
    fallback_to_synthetic: bool = False  # when the files are absent and cannot be fetched
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    items: ItemsConfig = Field(default_factory=ItemsConfig)

    def validate_config(self) -> None:
        check(
            self.dataset in KNOWN_DATASETS or (self.dataset.startswith("sasrec:") and len(self.dataset) > 7),
            "dataset",
            f"unknown dataset {self.dataset!r}; choose one of {list(KNOWN_DATASETS)} or 'sasrec:<Name>'",
        )
        check(self.min_user_interactions >= 3, "min_user_interactions", "must be >= 3 (train, valid and test items)")
        check(self.min_item_interactions >= 1, "min_item_interactions", "must be >= 1")
