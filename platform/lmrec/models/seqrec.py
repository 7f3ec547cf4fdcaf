"""`SeqRecModel`: a Llama-style decoder over item-ID tokens with tied output scores.

Imports neither ray nor torch.distributed: sharding wraps a finished model in
`lmrec.training.sharding`. Every computation that touches parameters goes through
`forward()` so that FSDP's root module has them gathered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import LlamaConfig, LlamaModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, eager_attention_forward

from lmrec.ids import PAD_ID
from lmrec.models.config import SeqRecConfig


def llama_config(cfg: SeqRecConfig) -> LlamaConfig:
    """The Hugging Face config of the backbone (random init, never downloaded)."""
    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.attn_head_dim,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta,
        attention_dropout=cfg.dropout,
        initializer_range=cfg.init_std,
        pad_token_id=PAD_ID,
        bos_token_id=None,
        eos_token_id=None,
        use_cache=False,
        attn_implementation="sdpa",
    )


_CUDA_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention_kernels(device: torch.device) -> AbstractContextManager:
    """The SDPA kernels the model runs with on `device` (a no-op off CUDA).

    On CUDA, not cuDNN attention: it builds a plan per new (B, L) shape, and sequence batches
    trimmed to their longest row take many shapes. Measured on an H200 in bf16: steps of
    up to 1.6 s while plans were built, vs ~20 ms with the other kernels (docs/benchmarks.md).
    A traced forward (serving) records no kernel choice, so its caller enters this itself.
    """
    return sdpa_kernel(_CUDA_SDPA_BACKENDS) if device.type == "cuda" else nullcontext()


class SeqRecModel(nn.Module):
    """Next-item prediction over a catalog of `num_items` items (ids 1..num_items, 0 = pad)."""

    def __init__(self, config: SeqRecConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = LlamaModel(llama_config(config))
        self.emb_dropout = nn.Dropout(config.dropout)
        with torch.no_grad():
            self.backbone.embed_tokens.weight[PAD_ID].zero_()

    @property
    def item_embeddings(self) -> torch.Tensor:
        """(num_items + 1, hidden) table; row 0 is padding. Output scores are tied to it."""
        return self.backbone.embed_tokens.weight

    @property
    def blocks(self) -> nn.ModuleList:
        """Transformer blocks (the units FSDP shards one by one)."""
        return self.backbone.layers

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids -> (B, L, hidden) causal hidden states."""
        mask = (input_ids != PAD_ID).long()
        x = self.emb_dropout(self.backbone.embed_tokens(input_ids))
        with attention_kernels(input_ids.device):
            return self.backbone(inputs_embeds=x, attention_mask=mask).last_hidden_state

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        candidates: torch.Tensor | None = None,
        head: Callable[[SeqRecModel, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """With `targets` (B, L): the scalar training loss over non-pad targets.

        Without: scores of the last position, (B, num_items + 1) over the whole catalog
        (column 0 = -inf), or (B, C) over `candidates` (B, C) when given.
        With `head`: `head(self, hidden)` on the (B, L, hidden) states, computed inside
        forward so that sharded parameters are gathered (distillation losses use it).
        """
        hidden = self.encode(input_ids)
        if head is not None:
            return head(self, hidden)
        if targets is not None:
            return self._loss(hidden, targets)
        last = hidden[:, -1, :]
        table = self.item_embeddings
        if candidates is not None:
            return torch.einsum("bh,bch->bc", last, table[candidates])
        scores = last @ table.T
        scores[:, PAD_ID] = float("-inf")
        return scores

    def _loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        valid = targets != PAD_ID
        h = hidden[valid]  # (n, H): only positions with a next item
        t = targets[valid]
        table = self.item_embeddings
        cfg = self.config
        if cfg.loss == "full":
            logits = (h @ table.T) / cfg.temperature
            logits[:, PAD_ID] = float("-inf")
            return F.cross_entropy(logits, t)
        if cfg.negative_sampling == "uniform":
            neg = torch.randint(1, cfg.vocab_size, (cfg.num_negatives,), device=h.device)
            pos_logit = (h * table[t]).sum(-1, keepdim=True)
            neg_logits = h @ table[neg].T
            neg_logits = neg_logits.masked_fill(neg[None, :] == t[:, None], float("-inf"))  # accidental hits
            logits = torch.cat([pos_logit, neg_logits], dim=1) / cfg.temperature
            return F.cross_entropy(logits, torch.zeros_like(t))
        # In-batch negatives: every distinct target in the batch is a candidate for every row.
        uniq, inverse, counts = torch.unique(t, return_inverse=True, return_counts=True)
        logits = (h @ table[uniq].T) / cfg.temperature
        if cfg.logq_correction:  # popular items are sampled more often as negatives
            logits = logits - torch.log(counts.to(logits.dtype) / t.numel())
        return F.cross_entropy(logits, inverse)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def init_weights_(model: SeqRecModel, seed: int) -> None:
    """Deterministic re-initialisation (same seed -> same weights on every rank)."""
    gen = torch.Generator().manual_seed(seed)
    std = model.config.init_std
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.zero_()
        model.item_embeddings[PAD_ID].zero_()
        # Scale residual projections as GPT-2 does, so deep stacks start stable.
        scale = 1.0 / math.sqrt(2 * model.config.num_layers)
        for block in model.blocks:
            block.self_attn.o_proj.weight.mul_(scale)
            block.mlp.down_proj.weight.mul_(scale)


class LastPositionLayer(nn.Module):
    """A decoder block that returns only the last position: (B, L, H) in, (B, 1, H) out.

    Scoring needs the last position's hidden state only. In the last block, every other
    position contributes keys and values, but its query, attention output, o-projection and
    MLP are wasted work. With the MLP at 3 x H x F multiply-adds per token, that is about
    85 % of the block (small: 4 x 256, F 768). It wraps the block's own modules (same
    parameters, so int8 or pruned blocks work too) and uses the backbone's attention
    function, so the result equals the full block's last row up to float rounding.
    The caller checks that (lmrec.serving.runtime) and keeps the full block when it does not.
    Inference only: training and evaluation under FSDP use the full block.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        block, attn = self.block, self.block.self_attn
        batch, length = hidden_states.shape[:2]
        normed = block.input_layernorm(hidden_states)
        q = attn.q_proj(normed[:, -1:]).view(batch, 1, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
        cos, sin = position_embeddings  # (B or 1, L, head_dim)
        q, _ = apply_rotary_pos_emb(q, q, cos[:, -1:], sin[:, -1:])
        _, k = apply_rotary_pos_emb(k, k, cos, sin)
        mask = attention_mask[:, :, -1:, :] if isinstance(attention_mask, torch.Tensor) else None
        fn = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
        out, _ = fn(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling)
        h = hidden_states[:, -1:] + attn.o_proj(out.reshape(batch, 1, -1).contiguous())
        return h + block.mlp(block.post_attention_layernorm(h))


def score_last_position_only(model: SeqRecModel) -> SeqRecModel:
    """Swap the last block for a `LastPositionLayer` in place (an inference copy's scores only)."""
    layers = model.backbone.layers
    if not isinstance(layers[-1], LastPositionLayer):
        layers[-1] = LastPositionLayer(layers[-1])
    return model


def score_full_sequence(model: SeqRecModel) -> SeqRecModel:
    """Undo `score_last_position_only`."""
    layers = model.backbone.layers
    if isinstance(layers[-1], LastPositionLayer):
        layers[-1] = layers[-1].block
    return model
