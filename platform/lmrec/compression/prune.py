"""Pruning: unstructured magnitude pruning, and structured pruning that shrinks the matrices.

Magnitude pruning zeroes the smallest-|w| entries of each block projection. It
makes the weights sparse but not the computation: dense kernels run as fast as
before, so it is for storage/compressibility studies, not latency.

Structured pruning removes whole attention heads and FFN channels, giving every
block smaller `q/k/v/o_proj` and `gate/up/down_proj` matrices. Each layer keeps
the same number of heads and channels (chosen per layer by importance), so the
result is an ordinary `SeqRecModel` whose config records `num_heads`,
`num_kv_heads`, `head_dim` and `intermediate_size`; it saves and loads with the
standard artifact code and trains with the standard loop (recovery fine-tune).

Why removing rows/columns is exact: in HF Llama attention each head's output is
`softmax(q_h k_h^T) v_h`, independent of other heads, and o_proj sums the heads'
contributions through its column blocks; the SwiGLU MLP sums channel j's
contribution `down[:, j] * silu(gate_j x) * (up_j x)`. Dropping a head (or
channel) is therefore the same function as zeroing its o_proj (down_proj)
columns, which `masked_reference` builds for the equivalence test. With grouped-
query attention a key/value head is shared by `num_heads / num_kv_heads` query
heads, so whole groups are removed (keeping the group size that the attention
kernel's `num_key_value_groups` assumes); with a single kv head, query heads are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from lmrec.compression.quantize import LINEAR_NAMES
from lmrec.models.seqrec import SeqRecModel

Importance = Literal["magnitude", "activation"]


# ---------------------------------------------------------------- unstructured


def prunable_weights(model: SeqRecModel) -> dict[str, nn.Parameter]:
    """The block projections' weights (embeddings and norms are never pruned)."""
    return {
        name: p
        for name, p in model.named_parameters()
        if name.endswith(".weight") and name.rsplit(".", 2)[-2] in LINEAR_NAMES
    }


def magnitude_prune(model: SeqRecModel, sparsity: float) -> tuple[SeqRecModel, dict[str, torch.Tensor]]:
    """A copy with the `sparsity` fraction of smallest-|w| entries of each projection set to 0.

    Exactly round(sparsity * numel) entries per matrix are zeroed (ties broken by
    position), so sparsity 0 returns identical weights. Returns (model, masks) with
    masks True where a weight is kept.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    out = copy.deepcopy(model)
    masks: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, w in prunable_weights(out).items():
            k = int(round(sparsity * w.numel()))
            mask = torch.ones(w.numel(), dtype=torch.bool, device=w.device)
            if k > 0:
                order = torch.argsort(w.detach().abs().flatten(), stable=True)
                mask[order[:k]] = False
            mask = mask.view_as(w)
            w.mul_(mask)
            masks[name] = mask
    return out, masks


def apply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned entries again (after optimizer steps during a recovery fine-tune)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            key = name if name in params else f"module.{name}"
            params[key].mul_(mask.to(params[key].device))


def sparsity(model: SeqRecModel) -> float:
    """Fraction of exactly-zero entries over the prunable projection weights."""
    ws = list(prunable_weights(model).values())
    total = sum(w.numel() for w in ws)
    zeros = sum(int((w == 0).sum()) for w in ws)
    return zeros / max(1, total)


# ---------------------------------------------------------------- structured


@dataclass
class StructuredPlan:
    """What structured pruning keeps, per layer (sorted indices into the original model)."""

    q_heads: list[list[int]] = field(default_factory=list)  # kept query heads
    kv_heads: list[list[int]] = field(default_factory=list)  # kept key/value heads
    channels: list[list[int]] = field(default_factory=list)  # kept FFN channels

    def to_dict(self) -> dict[str, list[list[int]]]:
        return {"q_heads": self.q_heads, "kv_heads": self.kv_heads, "channels": self.channels}


def _keep_count(n: int, amount: float) -> int:
    return max(1, min(n, int(round(n * (1.0 - amount)))))


@torch.no_grad()
def _activation_stats(model: SeqRecModel, calib: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mean squared input to each layer's o_proj and down_proj over non-pad calibration tokens.

    With W's column norms these give each head's / channel's typical output size
    (a structured version of Wanda's |W| * ||x|| score).
    """
    from lmrec.ids import PAD_ID

    o_in: list[torch.Tensor] = []
    d_in: list[torch.Tensor] = []
    hooks = []
    valid = (calib != PAD_ID).reshape(-1)

    def grab(store: list[torch.Tensor]):
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].reshape(-1, args[0].shape[-1])[valid].float()
            store.append((x * x).mean(0))

        return hook

    for block in model.blocks:
        hooks.append(block.self_attn.o_proj.register_forward_pre_hook(grab(o_in)))
        hooks.append(block.mlp.down_proj.register_forward_pre_hook(grab(d_in)))
    was_training = model.training
    model.eval()
    try:
        model(calib)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return o_in, d_in


def plan_structured(
    model: SeqRecModel,
    amount: float,
    heads: bool = True,
    ffn: bool = True,
    importance: Importance = "magnitude",
    calib_inputs: torch.Tensor | None = None,
) -> StructuredPlan:
    """Choose, per layer, the heads (or kv groups) and FFN channels to keep.

    `amount` is the fraction removed in each layer (0.5 halves heads and channels).
    "magnitude" scores a head by the squared norm of its q/k/v rows and o columns and
    a channel by ||gate_j|| * ||up_j|| * ||down_:,j||; "activation" multiplies the
    output-side weight norms by the mean squared input they see on `calib_inputs`.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    if importance == "activation" and calib_inputs is None:
        raise ValueError("importance='activation' needs calib_inputs (a (B, L) batch of item ids)")
    cfg = model.config
    hd, nq, nkv = cfg.attn_head_dim, cfg.num_heads, cfg.kv_heads
    group = nq // nkv
    o_stats, d_stats = _activation_stats(model, calib_inputs) if importance == "activation" else (None, None)
    plan = StructuredPlan()
    for li, block in enumerate(model.blocks):
        att, mlp = block.self_attn, block.mlp
        # --- heads: one score per query head, then per unit (kv group or query head)
        o_cols = att.o_proj.weight.float().pow(2)  # (hidden, nq * hd)
        if o_stats is not None:
            q_score = (o_cols.sum(0) * o_stats[li]).view(nq, hd).sum(1)
        else:
            q_score = att.q_proj.weight.float().pow(2).sum(1).view(nq, hd).sum(1) + o_cols.sum(0).view(nq, hd).sum(1)
            kv_score = (
                (att.k_proj.weight.float().pow(2).sum(1) + att.v_proj.weight.float().pow(2).sum(1)).view(nkv, hd).sum(1)
            )
            q_score = q_score + kv_score.repeat_interleave(group)
        if not heads or amount == 0.0:
            kept_q, kept_kv = list(range(nq)), list(range(nkv))
        elif nkv > 1:  # remove whole kv groups: a kv head and its `group` query heads
            unit = q_score.view(nkv, group).sum(1)
            kept_kv = sorted(torch.topk(unit, _keep_count(nkv, amount)).indices.tolist())
            kept_q = [g * group + j for g in kept_kv for j in range(group)]
        else:  # a single shared kv head: remove query heads
            kept_kv = [0]
            kept_q = sorted(torch.topk(q_score, _keep_count(nq, amount)).indices.tolist())
        # --- FFN channels
        down_cols = mlp.down_proj.weight.float().pow(2).sum(0)  # (ffn,)
        if d_stats is not None:
            c_score = down_cols * d_stats[li]
        else:
            c_score = (
                mlp.gate_proj.weight.float().pow(2).sum(1).sqrt()
                * mlp.up_proj.weight.float().pow(2).sum(1).sqrt()
                * down_cols.sqrt()
            )
        n_ffn = c_score.numel()
        if not ffn or amount == 0.0:
            kept_c = list(range(n_ffn))
        else:
            kept_c = sorted(torch.topk(c_score, _keep_count(n_ffn, amount)).indices.tolist())
        plan.q_heads.append(kept_q)
        plan.kv_heads.append(kept_kv)
        plan.channels.append(kept_c)
    return plan


def _rows(idx_heads: list[int], hd: int) -> torch.Tensor:
    return torch.tensor([h * hd + d for h in idx_heads for d in range(hd)], dtype=torch.long)


@torch.no_grad()
def apply_structured(model: SeqRecModel, plan: StructuredPlan) -> SeqRecModel:
    """A new, smaller `SeqRecModel` holding the kept heads and channels of `model`."""
    cfg = model.config
    hd = cfg.attn_head_dim
    n_q, n_kv, n_c = len(plan.q_heads[0]), len(plan.kv_heads[0]), len(plan.channels[0])
    if (
        any(len(q) != n_q for q in plan.q_heads)
        or any(len(k) != n_kv for k in plan.kv_heads)
        or any(len(c) != n_c for c in plan.channels)
    ):
        raise ValueError("structured plan must keep the same number of heads and channels in every layer")
    if n_q % n_kv:
        raise ValueError(f"kept query heads {n_q} must be a multiple of kept kv heads {n_kv}")
    pct = int(round(100 * (1 - n_c / cfg.ffn_size)))
    new_cfg = cfg.replace(
        num_heads=n_q,
        num_kv_heads=None if cfg.num_kv_heads is None and n_q == n_kv else n_kv,
        head_dim=hd,
        intermediate_size=n_c,
        name=f"{cfg.name}-pruned{pct}",
    )
    small = SeqRecModel(new_cfg).to(model.item_embeddings.device)
    sd = model.state_dict()
    new_sd = dict(sd)  # embeddings and norms carry over unchanged
    for li in range(cfg.num_layers):
        pre = f"backbone.layers.{li}."
        q_rows, kv_rows = _rows(plan.q_heads[li], hd), _rows(plan.kv_heads[li], hd)
        ch = torch.tensor(plan.channels[li], dtype=torch.long)
        new_sd[pre + "self_attn.q_proj.weight"] = sd[pre + "self_attn.q_proj.weight"][q_rows]
        new_sd[pre + "self_attn.k_proj.weight"] = sd[pre + "self_attn.k_proj.weight"][kv_rows]
        new_sd[pre + "self_attn.v_proj.weight"] = sd[pre + "self_attn.v_proj.weight"][kv_rows]
        new_sd[pre + "self_attn.o_proj.weight"] = sd[pre + "self_attn.o_proj.weight"][:, q_rows]
        new_sd[pre + "mlp.gate_proj.weight"] = sd[pre + "mlp.gate_proj.weight"][ch]
        new_sd[pre + "mlp.up_proj.weight"] = sd[pre + "mlp.up_proj.weight"][ch]
        new_sd[pre + "mlp.down_proj.weight"] = sd[pre + "mlp.down_proj.weight"][:, ch]
    small.load_state_dict({k: v.clone() for k, v in new_sd.items()}, strict=True)
    small.train(model.training)
    return small


def prune_structured(
    model: SeqRecModel,
    amount: float,
    heads: bool = True,
    ffn: bool = True,
    importance: Importance = "magnitude",
    calib_inputs: torch.Tensor | None = None,
) -> tuple[SeqRecModel, StructuredPlan]:
    """Remove the `amount` fraction of heads and FFN channels per layer; (smaller model, plan)."""
    plan = plan_structured(model, amount, heads, ffn, importance, calib_inputs)
    return apply_structured(model, plan), plan


@torch.no_grad()
def masked_reference(model: SeqRecModel, plan: StructuredPlan) -> SeqRecModel:
    """Full-size copy with pruned heads' o_proj columns and pruned channels' down_proj columns zeroed.

    Computes the same function as `apply_structured(model, plan)` (see module doc).
    """
    ref = copy.deepcopy(model)
    hd = model.config.attn_head_dim
    for li, block in enumerate(ref.blocks):
        att, mlp = block.self_attn, block.mlp
        keep_cols = torch.zeros(att.o_proj.weight.shape[1], dtype=torch.bool)
        keep_cols[_rows(plan.q_heads[li], hd)] = True
        att.o_proj.weight[:, ~keep_cols] = 0.0
        keep_c = torch.zeros(mlp.down_proj.weight.shape[1], dtype=torch.bool)
        keep_c[torch.tensor(plan.channels[li], dtype=torch.long)] = True
        mlp.down_proj.weight[:, ~keep_c] = 0.0
    return ref


def prune(
    model: SeqRecModel,
    kind: str,
    amount: float,
    calib_inputs: torch.Tensor | None = None,
) -> tuple[SeqRecModel, dict[str, object]]:
    """Dispatch on `kind` ("none" | "magnitude" | "structured"); returns (model, info for metadata).

    For magnitude pruning `info["masks"]` holds the keep-masks (for re-masking after
    fine-tune steps); it is not JSON and callers drop it before writing metadata.
    """
    if kind == "none":
        return copy.deepcopy(model), {"kind": "none"}
    if kind == "magnitude":
        pruned, masks = magnitude_prune(model, amount)
        return pruned, {"kind": "magnitude", "amount": amount, "sparsity": sparsity(pruned), "masks": masks}
    if kind == "structured":
        importance: Importance = "activation" if calib_inputs is not None else "magnitude"
        pruned, plan = prune_structured(model, amount, importance=importance, calib_inputs=calib_inputs)
        return pruned, {
            "kind": "structured",
            "amount": amount,
            "importance": importance,
            "heads_per_layer": len(plan.q_heads[0]),
            "ffn_per_layer": len(plan.channels[0]),
        }
    raise ValueError(f"unknown pruning kind {kind!r}; choose none, magnitude or structured")
