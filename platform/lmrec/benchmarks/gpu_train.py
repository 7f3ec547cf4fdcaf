"""The GPU benchmark's training parts (`lmrec.benchmarks.gpu`): FSDP2 checks, throughput, quality.

Each runs the library's own pieces (`setup_model`, `train_step`, `run_training`) in the
process group `gpu.init_group` made: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lmrec.config import load_config, replace
from lmrec.data.sequences import SequenceData, shard_batches, train_examples
from lmrec.training.checkpoint import read_state
from lmrec.training.config import TrainJobConfig
from lmrec.training.context import LocalContext
from lmrec.training.loop import run_training
from lmrec.training.sharding import resolve_precision, state_bytes
from lmrec.training.steps import default_loss, setup_model, train_step

BASE = [
    "model.max_seq_len=50",
    "model.dropout=0.0",
    "train.batch_size=128",
    "train.sliding_window=true",
    "train.log_every_steps=1000",
    "eval.protocols=[full]",
    "tracking.register=false",
]


def job(prepared: str, overrides: list[str]) -> TrainJobConfig:
    """The benchmark's TrainJobConfig (`BASE` + `overrides`) over an already prepared dataset."""
    cfg = load_config(TrainJobConfig, None, BASE + overrides)
    cfg.prepared_path = prepared
    return cfg


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ fsdp


def grad_check(prepared: str, device: torch.device, size: str) -> dict[str, Any]:
    """Gradients of one batch: FSDP2 (this group, bf16 and fp32) vs one process in fp32."""
    data = SequenceData.load(prepared, with_meta=False)
    cfg = job(prepared, [f"model.size={size}"])
    mcfg = cfg.model.build(data.num_items)
    inputs, targets = train_examples(data, mcfg.max_seq_len, True)
    idx = shard_batches(len(inputs), 64, 0, 1, 0, 0)[0]
    x = torch.from_numpy(inputs[idx]).to(device)
    y = torch.from_numpy(targets[idx]).to(device)

    def grads(strategy: str, precision: str) -> tuple[dict[str, torch.Tensor], float]:
        tc = replace(cfg, [f"train.strategy={strategy}", f"train.precision={precision}"]).train
        setup = setup_model(mcfg, tc, device)
        loss = default_loss(setup.model, x, y)
        loss.backward()
        out = {}
        for name, p in setup.model.named_parameters():
            g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            out[name] = g.detach().float().cpu()
        return out, float(loss.detach())

    ref, ref_loss = grads("none", "fp32")
    result: dict[str, Any] = {"size": size, "batch": 64, "reference_loss": ref_loss}
    for precision in ("fp32", "bf16"):
        got, loss = grads("fsdp", precision)
        num = sum(float((got[k] - ref[k]).pow(2).sum()) for k in ref)
        den = sum(float(ref[k].pow(2).sum()) for k in ref)
        result[f"fsdp_{precision}"] = {"loss": loss, "grad_rel_error": (num / den) ** 0.5}
    return result


def crash_and_resume(
    prepared: str, device: torch.device, size: str, epochs: int = 3, steps: int = 40
) -> dict[str, Any]:
    """Train with FSDP2 (precision auto), crash at a step mid-epoch, resume from the last checkpoint."""
    cfg = job(
        prepared,
        [
            f"model.size={size}",
            "train.strategy=fsdp",
            "train.precision=auto",
            f"train.epochs={epochs}",
            f"train.max_steps_per_epoch={steps}",
            f"train.checkpoint_every_steps={max(1, steps // 4)}",
            "eval.every_epochs=1",
            "eval.max_users=2048",
            "train.select_best=false",
        ],
    )
    crash_at = steps + steps // 2 + 3  # mid-way through epoch 1, a few steps after a mid-epoch checkpoint
    root = Path(tempfile.mkdtemp(prefix="lmrec-gpu-resume-"))
    calls = {"n": 0}

    def crashing_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise RuntimeError(f"injected crash at step {crash_at}")
        return default_loss(model, x, y)

    crashed = ""
    t0 = time.perf_counter()
    try:
        run_training(cfg, LocalContext(root, str(device)), loss_fn=crashing_loss)
    except RuntimeError as e:
        crashed = str(e)
    ctx = LocalContext(root, str(device))
    final = run_training(cfg, ctx)
    seconds = time.perf_counter() - t0
    last = sorted(root.glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    state = read_state(last)
    assert state is not None
    ok = (
        bool(crashed)
        and state.global_step == epochs * steps
        and state.epochs_completed == list(range(epochs))
        and state.restarts == 1
    )
    return {
        "size": size,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "crash": crashed,
        "resumed_restarts": state.restarts,
        "global_step": state.global_step,
        "expected_steps": epochs * steps,
        "epochs_completed": state.epochs_completed,
        "dtype": str(resolve_precision("auto", device)).removeprefix("torch."),
        "train_loss_per_epoch": [round(h["train_loss"], 4) for h in state.history],
        "test_ndcg@10": final.get("test/full/ndcg@10"),
        "seconds": round(seconds, 1),
        "ok": ok,
    }


# ------------------------------------------------------------------ throughput


def train_throughput(
    prepared: str, device: torch.device, sizes: list[str], batch: int, warmup: int, steps: int
) -> list[dict[str, Any]]:
    data = SequenceData.load(prepared, with_meta=False)
    rows = []
    for size in sizes:
        cfg = job(prepared, [f"model.size={size}", f"train.batch_size={batch}"])
        mcfg = cfg.model.build(data.num_items)
        inputs, targets = train_examples(data, mcfg.max_seq_len, True)
        batches = shard_batches(len(inputs), batch, 0, 1, 0, 0)
        if device.type == "cuda":
            variants = [("fp32", "none", "fp32"), ("bf16", "none", "bf16"), ("bf16_fsdp2", "fsdp", "bf16")]
        else:
            variants = [("fp32", "none", "fp32"), ("fp32_fsdp2", "fsdp", "fp32")]
        for name, strategy, precision in variants:
            tc = replace(cfg, [f"train.strategy={strategy}", f"train.precision={precision}"]).train
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            setup = setup_model(mcfg, tc, device)
            for i in range(warmup):
                train_step(setup, inputs[batches[i]], targets[batches[i]], device, tc.lr, tc.grad_clip, strategy)
            sync(device)
            t0 = time.perf_counter()
            losses = []
            for i in range(warmup, warmup + steps):
                losses.append(
                    train_step(setup, inputs[batches[i]], targets[batches[i]], device, tc.lr, tc.grad_clip, strategy)
                )
            sync(device)
            dt = time.perf_counter() - t0
            tokens = sum(int((targets[batches[i]] != 0).sum()) for i in range(warmup, warmup + steps))
            row = {
                "size": size,
                "parameters": mcfg.num_parameters(),
                "variant": name,
                "batch": batch,
                "samples_per_s": round(steps * batch / dt, 1),
                "tokens_per_s": round(tokens / dt, 0),
                "step_ms": round(dt / steps * 1000, 2),
                "state_mb": round(state_bytes(setup.model, setup.optimizer)["total"] / 2**20, 1),
                "last_loss": round(losses[-1], 4),
            }
            if device.type == "cuda":
                row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
            del setup
    return rows


# ------------------------------------------------------------------ quality


def quality(prepared: str, device: torch.device, config: str | None, overrides: list[str]) -> dict[str, Any]:
    cfg = load_config(TrainJobConfig, config, ["tracking.register=false"] + overrides)
    cfg = replace(cfg, ["train.strategy=none", "train.num_workers=1"])
    cfg.prepared_path = prepared
    t0 = time.perf_counter()
    ctx = LocalContext(None, str(device))
    final = run_training(cfg, ctx)
    hist = [r for r in ctx.reports if "epoch" in r and "final" not in r and "mid_epoch" not in r]
    return {
        "config": config,
        "overrides": overrides,
        "seconds": round(time.perf_counter() - t0, 1),
        "epochs_run": len(hist),
        "best_epoch": final.get("best_epoch"),
        "valid_ndcg@10_curve": [round(r["valid/full/ndcg@10"], 4) for r in hist if "valid/full/ndcg@10" in r],
        "final": {k: round(v, 4) for k, v in final.items() if k.startswith(("test/", "valid/"))},
    }
