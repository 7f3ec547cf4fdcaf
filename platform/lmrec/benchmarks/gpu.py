"""GPU checks and benchmarks of the training and ranking code, without Ray.

For a machine that has a CUDA GPU but no Ray (or to separate the model code from the Ray
layer): it runs the same worker loop (`run_training`), the same sharding (`wrap_model`)
and the same ranking code (`LoadedModel.rank`) that Ray Train and Ray Serve run, inside a
plain torch.distributed group (NCCL on CUDA, gloo on CPU). Parts:

- `fsdp`: one FSDP2 step over NCCL in bf16 and in fp32 against a single-process fp32
  reference on the same batch (gradient relative error), then a training run that is
  crashed mid-epoch and resumed from its torch.distributed.checkpoint files (no lost or
  repeated epochs, exactly the planned step count).
- `throughput`: training samples/s and peak memory per model size, fp32 unwrapped vs
  bf16 FSDP2, same batches.
- `forward`: the serving forward (`LoadedModel.rank`: forward, seen-item mask, top-k)
  per batch size and precision; the batching speed-up is best batch vs batch 1.
- `quality`: one training run to convergence on a prepared dataset (full-ranking test
  metrics of the best validation epoch).

Prints a table and writes JSON; the figures go in docs/benchmarks.md with the GPU named.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lmrec.benchmarks.gpu_train import crash_and_resume, grad_check, quality, train_throughput
from lmrec.data.sequences import SequenceData
from lmrec.models.seqrec import SeqRecModel, init_weights_
from lmrec.models.sizes import build_config


def init_group(device: torch.device) -> str:
    """A one-process group unless torchrun already set RANK/WORLD_SIZE; NCCL on CUDA, gloo on CPU."""
    if dist.is_initialized():
        return dist.get_backend()
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend, device_id=device)
    else:
        dist.init_process_group(backend)
    return backend


# ------------------------------------------------------------------ serving forward


def forward_latency(
    prepared: str, device: torch.device, sizes: list[str], batches: list[int], repeats: int
) -> list[dict[str, Any]]:
    from lmrec.serving.runtime import LoadedModel, _cast

    data = SequenceData.load(prepared, with_meta=False)
    rng = np.random.default_rng(0)
    hists = []
    for _ in range(max(batches) * 4):
        seq = data.sequence(int(rng.integers(data.num_users)))
        end = int(rng.integers(3, len(seq) + 1)) if len(seq) >= 3 else len(seq)
        hists.append(np.asarray(seq[max(0, end - 50) : end], dtype=np.int64))
    rows = []
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    for size in sizes:
        for precision in precisions:
            mcfg = build_config(size, data.num_items, dropout=0.0, max_seq_len=50)
            model = SeqRecModel(mcfg)
            init_weights_(model, 0)
            model, dtype = _cast(model.eval(), precision, device)
            loaded = LoadedModel(
                model=model,
                item_ids=np.arange(1, data.num_items + 1, dtype=np.int64),
                version=size,
                info={},
                max_seq_len=50,
                device=device,
                dtype=dtype,
                histories=None,
            )
            base = None
            for bs in batches:
                for _ in range(3):  # warm-up (CUDA kernels, allocator)
                    loaded.rank(hists[:bs], 10, [True] * bs)
                t0 = time.perf_counter()
                for r in range(repeats):
                    chunk = [hists[(r * bs + i) % len(hists)] for i in range(bs)]
                    loaded.rank(chunk, 10, [True] * bs)
                dt = (time.perf_counter() - t0) / repeats
                rps = bs / dt
                base = base or rps
                row = {
                    "size": size,
                    "parameters": mcfg.num_parameters(),
                    "precision": dtype,
                    "batch": bs,
                    "forward_ms": round(dt * 1000, 3),
                    "req_per_s": round(rps, 1),
                    "vs_batch_1": round(rps / base, 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            del loaded, model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", required=True, help="a prepared dataset folder (lmrec prepare / prepare_dataset)")
    p.add_argument(
        "--parts", default="fsdp,throughput,forward", help="comma list of fsdp, throughput, forward, quality"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", default="small,base,large,xl", help="model sizes for throughput")
    p.add_argument("--forward-sizes", default="small,base,large")
    p.add_argument("--batches", default="1,8,32,64,128,256")
    p.add_argument("--check-size", default="small", help="model size of the fsdp part")
    p.add_argument("--resume-steps", type=int, default=40, help="steps per epoch of the crash/resume run (3 epochs)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--config", help="TrainJobConfig YAML for the quality part")
    p.add_argument("--out", default="out/benchmark_gpu.json")
    p.add_argument("overrides", nargs="*", help="key=value overrides for the quality part")
    args = p.parse_intermixed_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    parts = [s for s in args.parts.split(",") if s]
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "dataset": json.loads((Path(args.prepared) / "manifest.json").read_text())["dataset"],
        "unix_time": int(time.time()),
    }
    print(json.dumps(out), flush=True)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after each part, so a run cut short keeps what it measured
        path.write_text(json.dumps(out, indent=1))

    if {"fsdp", "throughput"} & set(parts):
        out["backend"] = init_group(device)
    if "fsdp" in parts:
        out["grad_check"] = grad_check(args.prepared, device, args.check_size)
        print(json.dumps(out["grad_check"]), flush=True)
        out["crash_resume"] = crash_and_resume(args.prepared, device, args.check_size, steps=args.resume_steps)
        print(json.dumps(out["crash_resume"]), flush=True)
        save()
    if "throughput" in parts:
        out["train_throughput"] = train_throughput(
            args.prepared, device, args.sizes.split(","), args.batch, args.warmup, args.steps
        )
        save()
    if "forward" in parts:
        out["forward"] = forward_latency(
            args.prepared,
            device,
            args.forward_sizes.split(","),
            [int(b) for b in args.batches.split(",")],
            args.repeats,
        )
    if "quality" in parts:
        out["quality"] = quality(args.prepared, device, args.config, list(args.overrides))
        print(json.dumps(out["quality"]), flush=True)
    save()
    print_table(out)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0 if out.get("crash_resume", {}).get("ok", True) else 1


def print_table(out: dict[str, Any]) -> None:
    print(f"\nGPU benchmark on {out['device']} (torch {out['torch']}, CUDA {out['cuda']}), {out['dataset']}")
    if "grad_check" in out:
        g = out["grad_check"]
        print(
            f"FSDP2 over {out.get('backend')}: grad rel. error vs one-process fp32: "
            f"fp32 {g['fsdp_fp32']['grad_rel_error']:.2e}, bf16 {g['fsdp_bf16']['grad_rel_error']:.2e}"
        )
    if "crash_resume" in out:
        c = out["crash_resume"]
        print(
            f"crash/resume ({c['dtype']}): steps {c['global_step']}/{c['expected_steps']}, epochs {c['epochs_completed']}, "
            f"restarts {c['resumed_restarts']}, ok={c['ok']}"
        )
    if "train_throughput" in out:
        print(f"{'size':<7}{'params':>14}{'variant':>12}{'samples/s':>12}{'step ms':>10}{'peak GB':>9}")
        for r in out["train_throughput"]:
            print(
                f"{r['size']:<7}{r['parameters']:>14,}{r['variant']:>12}{r['samples_per_s']:>12,.1f}{r['step_ms']:>10.1f}"
                f"{r.get('peak_mem_gb', float('nan')):>9.2f}"
            )
    if "forward" in out:
        print(f"{'size':<7}{'prec':>6}{'batch':>7}{'ms':>9}{'req/s':>11}{'vs b1':>7}")
        for r in out["forward"]:
            print(
                f"{r['size']:<7}{r['precision']:>6}{r['batch']:>7}{r['forward_ms']:>9.2f}{r['req_per_s']:>11,.1f}{r['vs_batch_1']:>7.2f}"
            )
    if "quality" in out:
        print(json.dumps(out["quality"]["final"]))


if __name__ == "__main__":
    raise SystemExit(main())
