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

    def validate_config(self) -> None:
        check(
            self.dataset in KNOWN_DATASETS or (self.dataset.startswith("sasrec:") and len(self.dataset) > 7),
            "dataset",
            f"unknown dataset {self.dataset!r}; choose one of {list(KNOWN_DATASETS)} or 'sasrec:<Name>'",
        )
        check(self.min_user_interactions >= 3, "min_user_interactions", "must be >= 3 (train, valid and test items)")
        check(self.min_item_interactions >= 1, "min_item_interactions", "must be >= 1")
