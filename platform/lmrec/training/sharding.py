"""Wrap a finished model for distributed training: FSDP2, DDP or nothing.

FSDP2 (`fully_shard`) goes on each transformer block, then on the whole model, so
each block's parameters are gathered only while that block runs. bf16 mixed
precision (fp32 gradient reduction) is used on GPUs; CPUs train in fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from lmrec.models.seqrec import SeqRecModel


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 on CUDA devices that support it, fp32 elsewhere."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def wrap_model(model: SeqRecModel, strategy: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move `model` to `device` and wrap it for `strategy` ('fsdp' | 'ddp' | 'none')."""
    model = model.to(device)
    distributed = dist.is_available() and dist.is_initialized()
    if strategy == "none" or not distributed:
        return model
    if strategy == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        mp = (
            MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
            if dtype != torch.float32
            else MixedPrecisionPolicy()
        )
        for block in model.blocks:
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    raise ValueError(f"unknown strategy {strategy!r}")


def unwrap(model: nn.Module) -> SeqRecModel:
    """The SeqRecModel inside a DDP wrapper (FSDP2 wraps in place)."""
    return model.module if isinstance(model, DistributedDataParallel) else model  # type: ignore[return-value]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype, strategy: str) -> Iterator[None]:
    """Autocast for DDP/none in bf16; FSDP2 casts parameters itself."""
    if dtype == torch.float32 or strategy == "fsdp":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The shard this rank holds (DTensor) or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes this rank holds for parameters, gradients and optimizer state."""
    params = sum(local_tensor(p).numel() * local_tensor(p).element_size() for p in model.parameters())
    grads = sum(
        local_tensor(p.grad).numel() * local_tensor(p.grad).element_size()
        for p in model.parameters()
        if p.grad is not None
    )
    optim = 0
    if optimizer is not None:
        for st in optimizer.state.values():
            for v in st.values():
                if torch.is_tensor(v):
                    lt = local_tensor(v)
                    optim += lt.numel() * lt.element_size()
    return {"params": params, "grads": grads, "optim": optim, "total": params + grads + optim}
