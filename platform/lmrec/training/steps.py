"""The pieces of the training loop that tuning, distillation and the GPU script reuse: setup, one step,
distributed evaluation, export."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict

from lmrec.data.item_features import ItemFeatures
from lmrec.data.sequences import SequenceData, trim_padding
from lmrec.evaluation.metrics import metric_sums, sums_to_metrics
from lmrec.evaluation.protocols import rank_batch
from lmrec.models.artifacts import save_model_dir
from lmrec.models.config import SeqRecConfig
from lmrec.models.seqrec import SeqRecModel, init_weights_
from lmrec.training.config import TrainConfig
from lmrec.training.sharding import autocast, resolve_precision, unwrap, wrap_model

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
MODEL_CONFIG_FILE = "model_config.json"
JOB_CONFIG_FILE = "job_config.json"
EXPORT_DIR = "export"


# ------------------------------------------------------------------ pieces


@dataclass
class Setup:
    model: nn.Module  # possibly wrapped (DDP) or sharded in place (FSDP2)
    optimizer: torch.optim.Optimizer
    config: SeqRecConfig
    dtype: torch.dtype


def setup_model(
    model_cfg: SeqRecConfig,
    train: TrainConfig,
    device: torch.device,
    model: SeqRecModel | None = None,
    features: ItemFeatures | None = None,
    id_mask: np.ndarray | None = None,
) -> Setup:
    """Build (or take) the model, initialise it identically on every rank, shard it, make AdamW.

    A fused model gets its content buffers from `features` and its ID mask from `id_mask`
    (0 for items without training interactions: their ID rows are never trained)."""
    if model is None:
        model = SeqRecModel(model_cfg)
        init_weights_(model, train.seed)
        if model.fusion is not None:
            set_item_content(model, features, id_mask)
    dtype = resolve_precision(train.precision, device)
    wrapped = wrap_model(model, train.strategy, device, dtype)
    optimizer = torch.optim.AdamW(
        [p for p in wrapped.parameters() if p.requires_grad],
        lr=train.lr,
        betas=(train.betas[0], train.betas[1]),
        weight_decay=train.weight_decay,
    )
    return Setup(wrapped, optimizer, model_cfg, dtype)


def set_item_content(model: SeqRecModel, features: ItemFeatures | None, id_mask: np.ndarray | None) -> None:
    """Copy item features (data layer arrays) into a fused model's content buffers."""
    if features is None:
        raise ValueError("a fused model (model.content.fusion) needs item features")

    def t(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

    model.fusion.set_content(
        text=t(features.text), has_text=t(features.has_text), attrs=t(features.attrs), id_mask=t(id_mask)
    )


def id_mask_from_counts(train_counts: np.ndarray) -> np.ndarray:
    """(V,) 1 for items with training interactions, 0 for padding and items without any."""
    mask = (np.asarray(train_counts) > 0).astype(np.float32)
    mask[0] = 0.0
    return mask


def lr_at(step: int, train: TrainConfig, total_steps: int) -> float:
    """Learning rate for global step `step` (stateless, so resume needs no scheduler state)."""
    if train.warmup_steps and step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.schedule == "cosine" and total_steps > train.warmup_steps:
        progress = (step - train.warmup_steps) / max(1, total_steps - train.warmup_steps)
        return train.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return train.lr


def default_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return model(inputs, targets=targets)


def train_step(
    setup: Setup,
    inputs: np.ndarray,
    targets: np.ndarray,
    device: torch.device,
    lr: float,
    grad_clip: float,
    strategy: str,
    loss_fn: LossFn = default_loss,
) -> float:
    """One optimisation step on a (B, L) batch; returns the loss."""
    inputs, targets = trim_padding(inputs, targets)
    x = torch.from_numpy(inputs).to(device, non_blocking=True)
    y = torch.from_numpy(targets).to(device, non_blocking=True)
    for group in setup.optimizer.param_groups:
        group["lr"] = lr
    setup.model.train()
    with autocast(device, setup.dtype, strategy):
        loss = loss_fn(setup.model, x, y)
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(setup.model.parameters(), grad_clip)
    setup.optimizer.step()
    return float(loss.detach())


def all_reduce(values: np.ndarray, device: torch.device) -> np.ndarray:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.cpu().numpy()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: SequenceData,
    split: str,
    max_len: int,
    ks: list[int],
    protocols: list[str],
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    num_negatives: int = 100,
    seed: int = 0,
    max_users: int | None = None,
    dtype: torch.dtype = torch.float32,
    strategy: str = "none",
) -> dict[str, float]:
    """Metrics over all users, each rank ranking users rank::world_size.

    Every rank runs the same number of forward passes (FSDP gathers weights
    collectively), padding its last batches with a dummy user it then ignores.
    """
    model.eval()
    total = data.num_users if max_users is None else min(max_users, data.num_users)
    mine = np.arange(rank, total, world_size)
    per_rank = -(-total // world_size)
    n_batches = -(-per_rank // batch_size)

    def scorer(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype, strategy):
            return model(x).float()

    out: dict[str, float] = {}
    for protocol in protocols:
        rng = np.random.default_rng([seed, rank])
        sums = np.zeros(len(ks) * 2 + 2)  # metric sums + user count
        for b in range(n_batches):
            users = mine[b * batch_size : (b + 1) * batch_size]
            dummy = len(users) == 0
            ranks = rank_batch(
                scorer,
                data,
                users if not dummy else np.array([0]),
                split,
                max_len,
                device,
                protocol,
                num_negatives,
                rng,
            )
            if not dummy:
                sums[:-1] += metric_sums(ranks, ks)
                sums[-1] += len(users)
        sums = all_reduce(sums, device)
        for name, value in sums_to_metrics(sums[:-1], int(sums[-1]), ks).items():
            out[f"{split}/{protocol}/{name}"] = value
    model.train()
    return out


def export_model(
    setup: Setup, directory: str | Path, item_ids: list[int], metadata: dict[str, Any], rank: int
) -> Path | None:
    """Collective: gather full weights; rank 0 writes the safetensors artifact folder."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    if dist.is_available() and dist.is_initialized():
        sd = get_model_state_dict(setup.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = {k: v.detach().cpu() for k, v in unwrap(setup.model).state_dict().items()}
    if rank != 0:
        return None
    sd = {k.removeprefix("module."): v.float() for k, v in sd.items()}
    return save_model_dir(directory, setup.config, sd, item_ids, metadata)
