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
        return total

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeqRecConfig:
        return from_dict(cls, data)

    def replace(self, **changes: Any) -> SeqRecConfig:
        """A validated copy with `changes` (unknown fields and bad values raise ConfigError)."""
        return evolve(self, **changes)
