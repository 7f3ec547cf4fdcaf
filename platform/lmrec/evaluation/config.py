"""Typed config of evaluation."""

from __future__ import annotations

from pydantic import Field

from lmrec.config import ConfigModel, check


class EvalConfig(ConfigModel):
    """Full ranking (history excluded) and/or 100 uniformly sampled negatives."""

    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    protocols: list[str] = Field(default_factory=lambda: ["full", "sampled"])
    num_negatives: int = 100
    batch_size: int = 256
    every_epochs: int = 1  # validation every N epochs (0 = only at the end)
    max_users: int | None = None  # cap for quick runs; None = all users
    seed: int = 0
    select_metric: str = "full/ndcg@10"  # validation metric for best-epoch selection / early stopping

    def validate_config(self) -> None:
        check(len(self.ks) > 0 and all(k >= 1 for k in self.ks), "ks", "must be a non-empty list of positive ints")
        check(all(p in ("full", "sampled") for p in self.protocols), "protocols", "each must be 'full' or 'sampled'")
        check(self.num_negatives >= 1, "num_negatives", "must be >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.every_epochs >= 0, "every_epochs", "must be >= 0")
        proto, _, name = self.select_metric.partition("/")
        check(
            proto in self.protocols and "@" in name or name == "mrr",
            "select_metric",
            f"must be '<protocol>/<metric>@<k>' with a protocol from {self.protocols}, got {self.select_metric!r}",
        )
