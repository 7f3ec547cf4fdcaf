"""FSDP2 and DDP at 2 ranks (gloo, CPU) give the single-process gradients on the same batch,
shard parameter memory, and write DCP checkpoints that reload unsharded in one process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmrec.models import SeqRecModel, build_config, init_weights_
from lmrec.training.checkpoint import TrainState, save_checkpoint
from lmrec.training.sharding import state_bytes, wrap_model

VOCAB = 60


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randint(1, VOCAB + 1, (4, 12), generator=g)
    y = torch.randint(1, VOCAB + 1, (4, 12), generator=g)
    return x, y  # no padding: each half has the same number of targets, so mean-of-means == mean


def _fresh_model(fused: bool = False) -> SeqRecModel:
    content = dict(fusion="gate", text_dim=12, num_attributes=5, max_attributes=2) if fused else {}
    m = SeqRecModel(build_config("tiny", VOCAB, dropout=0.0, num_layers=2, **content))
    init_weights_(m, 123)
    if fused:  # the same content on every rank: text, attributes, two cold items (no ID)
        g = torch.Generator().manual_seed(5)
        mask = torch.ones(VOCAB + 1)
        mask[[0, 7, 8]] = 0
        attrs = torch.randint(0, 6, (VOCAB + 1, 2), generator=g)
        m.fusion.set_content(torch.randn(VOCAB + 1, 12, generator=g), torch.ones(VOCAB + 1), attrs, mask)
    return m


def _reference_grads(fused: bool = False) -> dict[str, torch.Tensor]:
    m = _fresh_model(fused)
    x, y = _batch()
    m(x, targets=y).backward()
    return {n: p.grad.clone() for n, p in m.named_parameters()}


def _worker(rank: int, world: int, port: int, strategy: str, out_dir: str, fused: bool = False) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        model = wrap_model(_fresh_model(fused), strategy, torch.device("cpu"), torch.float32)
        x, y = _batch()
        half = x.shape[0] // world
        sl = slice(rank * half, (rank + 1) * half)
        model(x[sl], targets=y[sl]).backward()
        grads = {}
        for n, p in model.named_parameters():
            g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            grads[n.removeprefix("module.")] = g.detach().clone()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        opt.step()
        sizes = state_bytes(model, opt)
        if strategy == "fsdp" and not fused:
            save_checkpoint(model, opt, TrainState(global_step=1), Path(out_dir) / "ckpt")
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            full = {}
        if rank == 0:
            name = f"{strategy}-fused" if fused else strategy
            torch.save({"grads": grads, "sizes": sizes, "full": full}, Path(out_dir) / f"{name}.pt")
        # Both ranks done with every collective before either tears gloo down: a rank that
        # exits while its peer is still talking can be aborted (SIGABRT in a gloo thread).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_two_rank_gradients_match_single_process(strategy: str, tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), strategy, str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / f"{strategy}.pt", weights_only=True)  # our own test output: tensors only
    ref = _reference_grads()
    assert set(got["grads"]) == set(ref)
    for name, g in ref.items():
        assert torch.allclose(got["grads"][name], g, atol=1e-6, rtol=1e-4), name
    unsharded = state_bytes(_fresh_model())["params"]
    if strategy == "fsdp":
        # each of 2 ranks holds about half of the parameters (plus padding)
        assert got["sizes"]["params"] <= 0.55 * unsharded
        assert got["sizes"]["optim"] <= 0.55 * 2 * unsharded
        _check_dcp_reloads_unsharded(tmp_path / "ckpt", got["full"])
    else:
        assert got["sizes"]["params"] == unsharded


def _check_dcp_reloads_unsharded(ckpt: Path, full: dict[str, torch.Tensor]) -> None:
    from lmrec.evaluate_cli import load_checkpoint_model

    (ckpt / "model_config.json").write_text(__import__("json").dumps(_fresh_model().config.to_dict()))
    model, _ = load_checkpoint_model(ckpt)
    sd = model.state_dict()
    assert set(sd) == set(full)
    for k, v in full.items():
        assert torch.allclose(sd[k], v), k


@pytest.mark.slow
def test_fused_model_two_rank_fsdp_gradients_match_single_process(tmp_path: Path) -> None:
    """ID, text projection, attribute bag and gate: FSDP2 over 2 ranks gives the single-process gradients."""
    mp.spawn(_worker, args=(2, _free_port(), "fsdp", str(tmp_path), True), nprocs=2, join=True)
    got = torch.load(tmp_path / "fsdp-fused.pt", weights_only=True)
    ref = _reference_grads(fused=True)
    assert set(got["grads"]) == set(ref) and any(n.startswith("fusion.") for n in ref)
    for name, g in ref.items():
        assert torch.allclose(got["grads"][name], g, atol=1e-6, rtol=1e-4), name
