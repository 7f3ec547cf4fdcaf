"""Named model sizes as builder functions (torchtune's `_model_builders` pattern).

Each builder takes the catalog size and optional field overrides and returns a
validated `SeqRecConfig`. Parameter counts depend on the catalog only through the
item-embedding table; `backbone_parameters` excludes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from lmrec.config import ConfigError, ConfigModel, check
from lmrec.models.config import SeqRecConfig


def seqrec_tiny(num_items: int, **overrides: Any) -> SeqRecConfig:
    """For tests and laptops: 2 x 64, the SASRec/BSARec benchmark shape."""
    return _build("tiny", num_items, dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256), overrides)


def seqrec_small(num_items: int, **overrides: Any) -> SeqRecConfig:
    """About 3M backbone parameters."""
    return _build(
        "small", num_items, dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=768), overrides
    )


def seqrec_base(num_items: int, **overrides: Any) -> SeqRecConfig:
    """About 34M backbone parameters."""
    return _build(
        "base", num_items, dict(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=2048), overrides
    )


def seqrec_large(num_items: int, **overrides: Any) -> SeqRecConfig:
    """>= 300M backbone parameters (24 x 1024)."""
    return _build(
        "large",
        num_items,
        dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, dropout=0.0),
        overrides,
    )


def seqrec_xl(num_items: int, **overrides: Any) -> SeqRecConfig:
    """>= 1B backbone parameters (24 x 2048, grouped-query attention)."""
    return _build(
        "xl",
        num_items,
        dict(hidden_size=2048, num_layers=24, num_heads=16, num_kv_heads=8, intermediate_size=6144, dropout=0.0),
        overrides,
    )


SIZES: dict[str, Callable[..., SeqRecConfig]] = {
    "tiny": seqrec_tiny,
    "small": seqrec_small,
    "base": seqrec_base,
    "large": seqrec_large,
    "xl": seqrec_xl,
}


def _build(name: str, num_items: int, preset: dict[str, Any], overrides: dict[str, Any]) -> SeqRecConfig:
    fields = {**preset, **{k: v for k, v in overrides.items() if v is not None}}
    return SeqRecConfig(num_items=num_items, name=name, **fields)  # ConfigError names a bad field


def build_config(size: str, num_items: int, **overrides: Any) -> SeqRecConfig:
    """Config for named `size` over a catalog of `num_items`, with field overrides."""
    if size not in SIZES:
        raise ConfigError("model.size", f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    return SIZES[size](num_items, **overrides)


def size_table(num_items: int) -> list[dict[str, Any]]:
    """One row per named size: shape and parameter counts for a catalog of `num_items`."""
    rows = []
    for name, builder in SIZES.items():
        cfg = builder(num_items)
        rows.append(
            dict(
                size=name,
                layers=cfg.num_layers,
                hidden=cfg.hidden_size,
                heads=cfg.num_heads,
                ffn=cfg.ffn_size,
                backbone_params=cfg.num_parameters(include_embeddings=False),
                total_params=cfg.num_parameters(),
            )
        )
    return rows


class ContentSpec(ConfigModel):
    """A job's `model.content` section: which item content is fused into the item representation.

    `text`: the encoder of item text (`wordllama`, or `hf:<hub name or local path>`), whose
    embeddings the driver computes with Ray Data before training (`lmrec.content.embed`,
    cached); None = no text. `attributes`: the dataset's categorical attributes as a bag of
    learned embeddings. `id_dropout`: P(an item's ID part is dropped) per training step, so that
    the model also learns to rank by content alone, as it must for a cold item.
    """

    fusion: Literal["id", "add", "gate", "concat_proj"] = "id"
    text: str | None = None
    attributes: bool = False
    max_attributes: int = 16  # attribute slots per item (more are cut, counted in the run's params)
    id_dropout: float = 0.0
    finetune_text: bool = False

    def validate_config(self) -> None:
        has_content = self.text is not None or self.attributes
        check(
            (self.fusion == "id") != has_content,
            "fusion",
            "'id' takes no content; with text or attributes choose 'add', 'gate' or 'concat_proj'"
            f" (got fusion={self.fusion!r}, text={self.text!r}, attributes={self.attributes})",
        )
        check(
            self.text is None or self.text == "wordllama" or (self.text.startswith("hf:") and len(self.text) > 3),
            "text",
            f"must be 'wordllama' or 'hf:<hub name or local path>', got {self.text!r}",
        )
        check(self.max_attributes >= 1, "max_attributes", "must be >= 1")
        check(0.0 <= self.id_dropout < 1.0, "id_dropout", f"must be in [0, 1), got {self.id_dropout}")
        check(self.id_dropout == 0 or has_content, "id_dropout", "needs text or attributes")

    @property
    def fused(self) -> bool:
        return self.fusion != "id"


class ModelSpec(ConfigModel):
    """A job's model section: a named size plus optional field overrides.

    The catalog size comes from the prepared dataset, so it is not set here.
    """

    size: str = "tiny"
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    intermediate_size: int | None = None
    max_seq_len: int | None = None
    dropout: float | None = None
    loss: Literal["full", "sampled"] | None = None
    negative_sampling: Literal["uniform", "in_batch"] | None = None
    num_negatives: int | None = None
    temperature: float | None = None
    content: ContentSpec = Field(default_factory=ContentSpec)

    def validate_config(self) -> None:
        check(self.size in SIZES, "size", f"unknown size {self.size!r}; choose one of {sorted(SIZES)}")
        # Build once with a dummy catalog so bad field combinations fail at load time.
        self.build(num_items=10)

    def overrides(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in type(self).model_fields
            if name not in ("size", "content") and getattr(self, name) is not None
        }

    def build(self, num_items: int, text_dim: int | None = None, num_attributes: int | None = None) -> SeqRecConfig:
        """The model config for a catalog of `num_items`; with content, the widths the data gives
        (placeholders when not given, so that a config validates before any data is read)."""
        c = self.content
        fused: dict[str, Any] = {}
        if c.fused:
            fused = dict(
                fusion=c.fusion,
                text_dim=(text_dim or 8) if c.text else 0,
                num_attributes=(num_attributes or 1) if c.attributes else 0,
                max_attributes=c.max_attributes if c.attributes else 0,
                id_dropout=c.id_dropout,
                finetune_text=c.finetune_text,
            )
        return build_config(self.size, num_items, **self.overrides(), **fused)
