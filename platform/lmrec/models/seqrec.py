"""`SeqRecModel`: a Llama-style decoder over item-ID tokens with tied output scores.

Imports neither ray nor torch.distributed: sharding wraps a finished model in
`lmrec.training.sharding`. Every computation that touches parameters goes through
`forward()` so that FSDP's root module has them gathered.
"""

from __future__ import annotations

import copy
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


class ItemFusion(nn.Module):
    """Fused item representations: ID embedding, projected text embedding, attribute bag.

    Content lives in buffers indexed by item_idx (row 0 = padding): `text` (V, text_dim),
    frozen unless `finetune_text`; `has_text` (V,); `attrs` (V, max_attributes) attribute ids
    (0 = empty slot); `id_mask` (V,), 0 for items whose ID embedding was never trained (cold
    items): they are represented by content alone, as the ID dropout of training teaches.
    """

    def __init__(self, config: SeqRecConfig) -> None:
        super().__init__()
        h, d, v = config.hidden_size, config.text_dim, config.vocab_size
        self.mode, self.id_dropout = config.fusion, config.id_dropout
        if d:
            text = torch.zeros(v, d)
            if config.finetune_text:
                self.text = nn.Parameter(text)
            else:
                self.register_buffer("text", text)
            self.register_buffer("has_text", torch.zeros(v))
            if self.mode != "concat_proj":
                self.text_proj = nn.Linear(d, h, bias=False)
        if config.num_attributes:
            self.attr_embed = nn.Embedding(config.num_attributes + 1, h, padding_idx=0)
            self.register_buffer("attrs", torch.zeros(v, config.max_attributes, dtype=torch.long))
        self.register_buffer("id_mask", torch.ones(v))
        if self.mode == "gate":
            self.gate = nn.Linear(2 * h, 1)
        if self.mode == "concat_proj":
            width = h + d + (h if config.num_attributes else 0)
            self.proj = nn.Linear(width, h)

    def set_content(
        self,
        text: torch.Tensor | None = None,
        has_text: torch.Tensor | None = None,
        attrs: torch.Tensor | None = None,
        id_mask: torch.Tensor | None = None,
    ) -> None:
        """Fill the content buffers (full (V, ...) tensors; None leaves one as it is)."""
        with torch.no_grad():
            for name, value in (("text", text), ("has_text", has_text), ("attrs", attrs), ("id_mask", id_mask)):
                if value is None:
                    continue
                if not hasattr(self, name):
                    raise ValueError(f"this model has no {name!r} content (see its config)")
                target = getattr(self, name)
                if tuple(value.shape) != tuple(target.shape):
                    raise ValueError(f"{name}: shape {tuple(value.shape)}, the model expects {tuple(target.shape)}")
                target.copy_(value.to(target.dtype))

    def fuse(
        self,
        ids: torch.Tensor,
        id_mask: torch.Tensor,
        text: torch.Tensor | None,
        has_text: torch.Tensor | None,
        attrs: torch.Tensor | None,
    ) -> torch.Tensor:
        """(n, H) representations of n items from their ID rows (n, H), ID mask (n,) and content."""
        m = id_mask.to(ids.dtype)[:, None]
        parts = []
        if text is not None:
            t = text.to(ids.dtype) * has_text.to(ids.dtype)[:, None]
            parts.append(t if self.mode == "concat_proj" else self.text_proj(t))
        if attrs is not None:
            emb = self.attr_embed(attrs)  # (n, A, H); slot 0 embeds to zeros (padding_idx)
            count = (attrs != 0).sum(-1, keepdim=True).clamp(min=1).to(emb.dtype)
            parts.append(emb.sum(1) / count)
        if self.mode == "concat_proj":
            return self.proj(torch.cat([ids * m, *parts], dim=-1))
        content = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        if self.mode == "add":
            return ids * m + content
        g = torch.sigmoid(self.gate(torch.cat([ids * m, content], dim=-1))) * m  # gate: cold -> content only
        return g * ids + (1 - g) * content

    def table(self, id_weight: torch.Tensor) -> torch.Tensor:
        """(V, H) fused table; row 0 (padding) is zero. Training drops IDs with P(id_dropout)."""
        mask = self.id_mask
        if self.training and self.id_dropout > 0:
            mask = mask * (torch.rand(mask.shape, device=mask.device) >= self.id_dropout).to(mask.dtype)
        rows = self.fuse(
            id_weight,
            mask,
            getattr(self, "text", None),
            getattr(self, "has_text", None),
            getattr(self, "attrs", None),
        )
        keep = torch.ones_like(mask)
        keep[PAD_ID] = 0
        return rows * keep[:, None].to(rows.dtype)


class SeqRecModel(nn.Module):
    """Next-item prediction over a catalog of `num_items` items (ids 1..num_items, 0 = pad).

    With `config.fusion` other than "id", an item is its fused representation (`ItemFusion`):
    the same table is the input token embedding and the tied output scoring matrix, so an
    item without interactions (ID masked) still has a representation and a score.
    """

    def __init__(self, config: SeqRecConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = LlamaModel(llama_config(config))
        self.emb_dropout = nn.Dropout(config.dropout)
        self.fusion = ItemFusion(config) if config.fused else None
        with torch.no_grad():
            self.backbone.embed_tokens.weight[PAD_ID].zero_()

    @property
    def item_embeddings(self) -> torch.Tensor:
        """(num_items + 1, hidden) table; row 0 is padding. Output scores are tied to it.

        Fused models compute it from the ID table and the content (call inside forward under FSDP)."""
        if self.fusion is None:
            return self.backbone.embed_tokens.weight
        return self.fusion.table(self.backbone.embed_tokens.weight)

    @property
    def blocks(self) -> nn.ModuleList:
        """Transformer blocks (the units FSDP shards one by one)."""
        return self.backbone.layers

    def encode(self, input_ids: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) left-padded item ids -> (B, L, hidden) causal hidden states (`table`: the item table)."""
        mask = (input_ids != PAD_ID).long()
        tokens = self.backbone.embed_tokens(input_ids) if table is None else F.embedding(input_ids, table)
        x = self.emb_dropout(tokens)
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
        # One fused table per forward: input tokens and output scores share it (and its ID dropout).
        table = self.item_embeddings if self.fusion is not None else None
        hidden = self.encode(input_ids, table)
        if head is not None:
            return head(self, hidden)
        if table is None:
            table = self.item_embeddings
        if targets is not None:
            return self._loss(hidden, targets, table)
        last = hidden[:, -1, :]
        if candidates is not None:
            return torch.einsum("bh,bch->bc", last, table[candidates])
        scores = last @ table.T
        scores[:, PAD_ID] = float("-inf")
        return scores

    def _loss(self, hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        valid = targets != PAD_ID
        h = hidden[valid]  # (n, H): only positions with a next item
        t = targets[valid]
        cfg = self.config
        # A fused model's training catalog is the items with training interactions: the others (ID
        # masked) are items that do not exist yet as far as training knows, not negatives. Pushing
        # them down would teach the content projection that "content like theirs" never comes next,
        # which is the opposite of what a cold item needs.
        absent = None if self.fusion is None else self.fusion.id_mask == 0
        if cfg.loss == "full":
            logits = (h @ table.T) / cfg.temperature
            logits[:, PAD_ID] = float("-inf")
            if absent is not None:
                logits = logits.masked_fill(absent[None, :], float("-inf"))
            return F.cross_entropy(logits, t)
        if cfg.negative_sampling == "uniform":
            neg = torch.randint(1, cfg.vocab_size, (cfg.num_negatives,), device=h.device)
            pos_logit = (h * table[t]).sum(-1, keepdim=True)
            neg_logits = h @ table[neg].T
            hits = neg[None, :] == t[:, None]  # accidental hits
            if absent is not None:
                hits = hits | absent[neg][None, :]
            neg_logits = neg_logits.masked_fill(hits, float("-inf"))
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
            if name == "fusion.text":  # fine-tuned text embeddings start from the encoder's
                continue
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.zero_()
        model.backbone.embed_tokens.weight[PAD_ID].zero_()
        if model.fusion is not None and hasattr(model.fusion, "attr_embed"):
            model.fusion.attr_embed.weight[0].zero_()  # padding slot
        # Scale residual projections as GPT-2 does, so deep stacks start stable.
        scale = 1.0 / math.sqrt(2 * model.config.num_layers)
        for block in model.blocks:
            block.self_attn.o_proj.weight.mul_(scale)
            block.mlp.down_proj.weight.mul_(scale)


@torch.no_grad()
def content_rows(
    model: SeqRecModel,
    text: torch.Tensor | None = None,
    has_text: torch.Tensor | None = None,
    attrs: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n, H) content-only representations of n items the model has never seen (no ID part).

    `text` (n, text_dim) float, `has_text` (n,), `attrs` (n, max_attributes) attribute ids;
    what the model was built with must be given (None elsewhere)."""
    fusion = model.fusion
    if fusion is None:
        raise ValueError("an ID-only model (fusion 'id') cannot represent an item by its content")
    cfg = model.config
    n = next(x for x in (text, attrs) if x is not None).shape[0]
    ref = model.backbone.embed_tokens.weight
    if cfg.text_dim and text is None:
        text, has_text = torch.zeros(n, cfg.text_dim), torch.zeros(n)
    if cfg.num_attributes and attrs is None:
        attrs = torch.zeros(n, cfg.max_attributes, dtype=torch.long)
    dev = ref.device
    rows = fusion.fuse(
        torch.zeros(n, cfg.hidden_size, dtype=ref.dtype, device=dev),
        torch.zeros(n, device=dev),
        None if not cfg.text_dim else text.to(dev, ref.dtype),
        None if not cfg.text_dim else has_text.to(dev, ref.dtype),
        None if not cfg.num_attributes else attrs.to(dev),
    )
    return rows


@torch.no_grad()
def freeze_items(model: SeqRecModel, extra_rows: torch.Tensor | None = None) -> SeqRecModel:
    """An ID-table model that scores exactly as the fused `model` (eval mode), plus `extra_rows`.

    Serving: the fused table is computed once, then stands in as a plain embedding table, so the
    compiled forward and its checks are those of an ID-only model; items added to the catalog
    (their `content_rows`) are appended as new ids num_items+1, ... . Shares the backbone weights.
    """
    model.eval()
    table = model.item_embeddings.detach()
    if extra_rows is not None and len(extra_rows):
        table = torch.cat([table, extra_rows.to(table.device, table.dtype)])
    cfg = model.config.replace(
        num_items=table.shape[0] - 1,
        fusion="id",
        text_dim=0,
        num_attributes=0,
        max_attributes=0,
        id_dropout=0.0,
        finetune_text=False,
    )
    embed = nn.Embedding(table.shape[0], table.shape[1], padding_idx=PAD_ID, device=table.device, dtype=table.dtype)
    embed.weight.copy_(table)
    backbone = copy.copy(model.backbone)  # shallow: the same blocks and norms, its own embedding table
    backbone._modules = {**model.backbone._modules, "embed_tokens": embed}
    frozen = SeqRecModel.__new__(SeqRecModel)
    nn.Module.__init__(frozen)
    frozen.config = cfg
    frozen.backbone = backbone
    frozen.emb_dropout = model.emb_dropout
    frozen.fusion = None
    return frozen.eval()


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
