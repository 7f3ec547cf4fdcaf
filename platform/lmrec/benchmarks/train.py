"""Training benchmark: bare PyTorch loop vs Ray Train (1 worker) vs Ray Train (2 workers, FSDP).

Same model, data, batches and step count in one run; throughput is taken from the
second (warm) epoch of each. Memory is the per-rank bytes of parameters + gradients +
optimizer state after training (the sharded state FSDP splits). Prints a table and
writes JSON; results belong in docs/benchmarks.md. No timing assertions anywhere:
the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from lmrec.config import load_config, replace, to_dict
from lmrec.data.prepare import prepare_dataset
from lmrec.data.sequences import SequenceData, shard_batches, train_examples, trim_padding
from lmrec.models.seqrec import SeqRecModel, init_weights_
from lmrec.training.checkpoint import read_state
from lmrec.training.config import TrainJobConfig
from lmrec.training.sharding import state_bytes
from lmrec.training.trainer import build_trainer, ensure_ray

DEFAULTS = [
    "data.dataset=ml-100k",
    "data.fallback_to_synthetic=true",
    "model.size=small",
    "model.max_seq_len=50",
    "model.dropout=0.0",
    "train.batch_size=32",
    "train.epochs=2",
    "train.max_steps_per_epoch=30",
    "train.sliding_window=true",
    "eval.every_epochs=0",
    "eval.protocols=[full]",
    "eval.max_users=64",
    "tracking.register=false",
    "train.log_every_steps=1000",
]


def bare_loop(cfg: TrainJobConfig, data: SequenceData, threads: int) -> dict[str, Any]:
    """The plain single-process loop a user would write: no Ray, no checkpoints, no logging."""
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.train.seed)
    model = SeqRecModel(cfg.model.build(data.num_items))
    init_weights_(model, cfg.train.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas))
    inputs, targets = train_examples(data, model.config.max_seq_len, cfg.train.sliding_window)
    steps = cfg.train.max_steps_per_epoch
    per_epoch = []
    for epoch in range(cfg.train.epochs):
        batches = shard_batches(len(inputs), cfg.train.batch_size, 0, 1, epoch, cfg.train.seed)[:steps]
        t0 = time.perf_counter()
        for idx in batches:
            x, y = trim_padding(inputs[idx], targets[idx])
            loss = model(torch.from_numpy(x), targets=torch.from_numpy(y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
        per_epoch.append(len(batches) * cfg.train.batch_size / (time.perf_counter() - t0))
    return {"samples_per_s": per_epoch[-1], "state_bytes": state_bytes(model, opt)}


def ray_train(
    cfg: TrainJobConfig, workers: int, strategy: str, cpus: float, storage: str, name: str, *extra: str
) -> dict[str, Any]:
    cfg = replace(
        cfg, [f"train.num_workers={workers}", f"train.strategy={strategy}", f"train.cpus_per_worker={cpus}", *extra]
    )
    result = build_trainer(cfg, name, storage).fit()
    state = read_state(result.checkpoint.path)
    assert state is not None
    return {
        "samples_per_s": state.history[-1]["samples_per_s"],  # last (warm) epoch, all ranks together
        "state_bytes_rank0": int(result.metrics["rank0_state_bytes"]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config(TrainJobConfig, args.config, DEFAULTS + list(args.overrides))
    ensure_ray(num_cpus=max(4, args.cpus + 1))
    prepared = prepare_dataset(cfg.data)
    cfg.prepared_path = str(prepared.path)
    data = SequenceData.load(prepared.path, with_meta=False)
    storage = str(Path(args.storage).resolve())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    model_cfg = cfg.model.build(data.num_items)

    # The bare loop runs with no Ray on the machine: a freshly started local Ray prestarts
    # worker processes whose imports would steal CPU from it (measured: 2.8x slower).
    # With --rounds N the bare loop and Ray Train's 1-worker run alternate N times (the
    # order flips every round, so slow drift of the machine falls on both sides), and the
    # headline ratio is the median of the per-round ratios.
    import ray

    def one_worker(name: str, *extra: str) -> dict[str, Any]:
        return ray_train(cfg, 1, "none", float(args.cpus), storage, name, *extra)

    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        order = ("bare", "ray") if r % 2 == 0 else ("ray", "bare")
        row: dict[str, float] = {}
        for which in order:
            if which == "bare":
                ray.shutdown()
                bare = bare_loop(cfg, data, threads=args.cpus)
                row["bare"] = bare["samples_per_s"]
            else:
                ensure_ray(num_cpus=max(4, args.cpus + 1))
                time.sleep(10)  # let the new cluster's start-up finish before timing Ray Train
                one = one_worker(f"bench-1w-{stamp}-r{r}")
                row["ray_1_worker"] = one["samples_per_s"]
                one_state = one["state_bytes_rank0"]
                if args.no_epoch_checkpoint_run:  # same, without the epoch-1 checkpoint before the timed epoch
                    row["ray_1_worker_no_epoch_ckpt"] = one_worker(
                        f"bench-1w-nockpt-{stamp}-r{r}", "train.checkpoint_every_epochs=0"
                    )["samples_per_s"]
        row["ratio"] = row["ray_1_worker"] / row["bare"]
        if "ray_1_worker_no_epoch_ckpt" in row:
            row["ratio_no_epoch_ckpt"] = row["ray_1_worker_no_epoch_ckpt"] / row["bare"]
        rounds.append(row)
        print(
            f"[benchmark_train] round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()),
            flush=True,
        )
    ensure_ray(num_cpus=max(4, args.cpus + 1))
    two = ray_train(cfg, 2, "fsdp", args.cpus / 2, storage, f"bench-2w-fsdp-{stamp}")
    unsharded = bare["state_bytes"]["total"]
    bare_sps = statistics.median(r["bare"] for r in rounds)
    one_sps = statistics.median(r["ray_1_worker"] for r in rounds)
    out = {
        "dataset": prepared.manifest["dataset"],
        "model": {"size": model_cfg.name, "parameters": model_cfg.num_parameters(), **to_dict(cfg.model)},
        "batch_size_per_worker": cfg.train.batch_size,
        "steps_per_epoch": cfg.train.max_steps_per_epoch,
        "cpus": args.cpus,
        "device": "cuda" if cfg.train.use_gpu else "cpu",
        "host": platform.node(),
        "torch": torch.__version__,
        "rounds": rounds,
        "results": {  # samples/s: medians over rounds (the 2-worker run is measured once, after the rounds)
            "bare_pytorch": {"samples_per_s": bare_sps, "state_bytes_per_rank": unsharded},
            "ray_train_1_worker": {"samples_per_s": one_sps, "state_bytes_per_rank": one_state},
            "ray_train_2_workers_fsdp": {
                "samples_per_s": two["samples_per_s"],
                "state_bytes_per_rank": two["state_bytes_rank0"],
            },
        },
        "ratios": {
            "ray1_vs_bare_throughput": statistics.median(r["ratio"] for r in rounds),  # median of per-round ratios
            "ray1_vs_bare_throughput_per_round": [r["ratio"] for r in rounds],
            **(
                {"ray1_no_epoch_ckpt_vs_bare_throughput": statistics.median(r["ratio_no_epoch_ckpt"] for r in rounds)}
                if args.no_epoch_checkpoint_run
                else {}
            ),
            "fsdp2_vs_bare_throughput": two["samples_per_s"] / bare_sps,
            "fsdp2_per_rank_state_vs_unsharded": two["state_bytes_rank0"] / unsharded,
        },
        "targets": {"ray1_vs_bare_throughput": ">= 0.9", "fsdp2_per_rank_state_vs_unsharded": "<= 0.55"},
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seeds": {"train": cfg.train.seed},
        "unix_time": int(time.time()),
    }
    return out


def print_table(out: dict[str, Any]) -> None:
    r = out["results"]
    print(
        f"\ntraining benchmark: {out['model']['size']} model ({out['model']['parameters']:,} params), "
        f"{out['dataset']}, batch {out['batch_size_per_worker']}/worker, {out['steps_per_epoch']} steps/epoch, "
        f"{out['cpus']} CPUs"
    )
    print(f"{'setup':<28}{'samples/s':>12}{'vs bare':>10}{'state/rank (MB)':>18}{'vs unsharded':>14}")
    base_sps = r["bare_pytorch"]["samples_per_s"]
    base_mem = r["bare_pytorch"]["state_bytes_per_rank"]
    for name, row in r.items():
        print(
            f"{name:<28}{row['samples_per_s']:>12,.1f}{row['samples_per_s'] / base_sps:>10.2f}"
            f"{row['state_bytes_per_rank'] / 2**20:>18.2f}{row['state_bytes_per_rank'] / base_mem:>14.2f}"
        )
    print(json.dumps(out["ratios"], indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", help="TrainJobConfig YAML (defaults: ML-100k, small model)")
    p.add_argument(
        "--cpus", type=int, default=2, help="CPUs for the bare loop and the 1-worker run; split over 2 ranks"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate the bare loop and Ray Train 1 worker this many times; the ratio is the median",
    )
    p.add_argument(
        "--no-epoch-checkpoint-run",
        action="store_true",
        help="per round, also time Ray Train 1 worker with train.checkpoint_every_epochs=0",
    )
    p.add_argument("--storage", default="out/bench_storage")
    p.add_argument("--out", default="out/benchmark_train.json")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    out = run(args)
    print_table(out)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
