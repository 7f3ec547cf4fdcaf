"""`SeqRecConfig`: the typed, self-validating config of the sequential recommender."""

from __future__ import annotations

from typing import Any, Literal

from lmrec.config import ConfigModel, check, evolve, from_dict, to_dict


class SeqRecConfig(ConfigModel):
    """Decoder-only transformer over item-ID tokens, output scores tied to item embeddings."""

    num_items: int
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int | None = None  # None = num_heads (plain multi-head attention)
    intermediate_size: int | None = None  # None = 4 * hidden_size
    head_dim: int | None = None  # None = hidden_size // num_heads; set by structured head pruning
    max_seq_len: int = 50
    dropout: float = 0.1  # on item embeddings and attention probabilities
    loss: Literal["full", "sampled"] = "full"
    negative_sampling: Literal["uniform", "in_batch"] = "uniform"
    num_negatives: int = 256  # sampled softmax only; shared across the batch
    temperature: float = 1.0  # logits are divided by this (sampled softmax likes ~0.05-0.2)
    logq_correction: bool = True  # in-batch negatives: subtract log(sampling prob)
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    init_std: float = 0.02
    name: str = "custom"  # the size preset it was built from
    # Item content fused into the item representation (lmrec.models.seqrec, "Fused items").
    # "id": ID embeddings only. "add": ID + projected text + attribute bag. "gate": a learned
    # per-item sigmoid gate between the ID and the content part. "concat_proj": a linear
    # projection of [ID ; raw text embedding ; attribute bag].
    fusion: Literal["id", "add", "gate", "concat_proj"] = "id"
    text_dim: int = 0  # width of the frozen text embeddings (0 = no text)
    num_attributes: int = 0  # attribute vocabulary (ids 1..num_attributes; 0 = no attributes)
    max_attributes: int = 0  # attribute slots per item
    id_dropout: float = 0.0  # training: P(an item's ID part is dropped) per step (content-only, as a cold item)
    finetune_text: bool = False  # the text table is a trained parameter instead of a frozen buffer

    def validate_config(self) -> None:
        check(self.num_items >= 1, "num_items", f"must be >= 1, got {self.num_items}")
        check(self.hidden_size >= 8, "hidden_size", f"must be >= 8, got {self.hidden_size}")
        check(self.num_layers >= 1, "num_layers", f"must be >= 1, got {self.num_layers}")
        check(self.num_heads >= 1, "num_heads", f"must be >= 1, got {self.num_heads}")
        if self.head_dim is None:
            check(
                self.hidden_size % self.num_heads == 0,
                "num_heads",
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}",
            )
        else:
            check(self.head_dim >= 2, "head_dim", f"must be >= 2, got {self.head_dim}")
        head_dim = self.attn_head_dim
        check(head_dim % 2 == 0, "num_heads", f"head dim {head_dim} must be even for rotary embeddings")
        kv = self.kv_heads
        check(
            kv >= 1 and self.num_heads % kv == 0,
            "num_kv_heads",
            f"num_heads {self.num_heads} must be a multiple of num_kv_heads {kv}",
        )
        check(self.max_seq_len >= 2, "max_seq_len", f"must be >= 2, got {self.max_seq_len}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.num_negatives >= 1, "num_negatives", f"must be >= 1, got {self.num_negatives}")
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        if self.intermediate_size is not None:
            check(self.intermediate_size >= 1, "intermediate_size", "must be >= 1")
        check(self.text_dim >= 0, "text_dim", "must be >= 0")
        check(self.num_attributes >= 0, "num_attributes", "must be >= 0")
        check(
            (self.num_attributes == 0) == (self.max_attributes == 0),
            "max_attributes",
            "must be > 0 exactly when num_attributes > 0",
        )
        has_content = self.text_dim > 0 or self.num_attributes > 0
        check(
            (self.fusion == "id") != has_content,
            "fusion",
            "'id' takes no item content; 'add', 'gate' and 'concat_proj' need text_dim or num_attributes > 0"
            f" (got fusion={self.fusion!r}, text_dim={self.text_dim}, num_attributes={self.num_attributes})",
        )
        check(0.0 <= self.id_dropout < 1.0, "id_dropout", f"must be in [0, 1), got {self.id_dropout}")
        check(self.id_dropout == 0 or has_content, "id_dropout", "needs item content (fusion other than 'id')")
        check(not self.finetune_text or self.text_dim > 0, "finetune_text", "needs text_dim > 0")

    @property
    def fused(self) -> bool:
        return self.fusion != "id"

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def attn_head_dim(self) -> int:
        """Width of one attention head (explicit after head pruning, else hidden_size // num_heads)."""
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.num_items + 1  # + padding id 0

    def num_parameters(self, include_embeddings: bool = True) -> int:
        """Exact parameter count (matches `sum(p.numel())` of the built model)."""
        h, f, L = self.hidden_size, self.ffn_size, self.num_layers
        head_dim = self.attn_head_dim
        attn = 2 * h * self.num_heads * head_dim + 2 * h * self.kv_heads * head_dim  # q, o + k, v (no biases)
        mlp = 3 * h * f  # gate, up, down
        per_layer = attn + mlp + 2 * h  # two RMSNorms
        total = L * per_layer + h  # final norm
        if include_embeddings:
            total += self.vocab_size * h
            total += self.content_parameters()
        return total

    def content_parameters(self) -> int:
        """Trained parameters of the fusion (text projection, attribute table, gate, concat projection)."""
        h, d = self.hidden_size, self.text_dim
        n = 0
        if d and self.fusion != "concat_proj":
            n += d * h
        if self.finetune_text:
            n += self.vocab_size * d
        if self.num_attributes:
            n += (self.num_attributes + 1) * h
        if self.fusion == "gate":
            n += 2 * h + 1
        if self.fusion == "concat_proj":
            n += (h + d + (h if self.num_attributes else 0)) * h + h
        return n

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeqRecConfig:
        return from_dict(cls, data)

    def replace(self, **changes: Any) -> SeqRecConfig:
        """A validated copy with `changes` (unknown fields and bad values raise ConfigError)."""
        return evolve(self, **changes)
