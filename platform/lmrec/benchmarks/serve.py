"""Serving benchmark: raw forward ceiling vs Ray Serve (proxy and topology variants) vs a plain FastAPI peer.

One run, same model, same request bodies, same machine. For each Serve variant a
fresh Ray head is started with the variant's environment (the proxy settings are
read when Ray starts): Serve's default Python proxy, the HAProxy ingress
(`RAY_SERVE_ENABLE_HA_PROXY=1`), and HAProxy with `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`, the
last with both app topologies (`split`: Ingress -> Ranker; `fused`: the Ingress ranks), and
`fused` once more with POST /recommend through FastAPI's route instead of the ASGI fast path.
Measured per variant: latency percentiles and throughput at several concurrency
levels with batching on (closed loop: a fixed number of requests in flight), latency at fixed offered
loads below that peak (open loop: requests sent on a schedule), throughput with batching off
(max_batch_size=1), and cache hits vs misses at concurrency 1. The ceiling is the forward alone
(serve_ceiling), with the replica's threads and at the machine's best. `--profile` records where
the replica's time goes under the saturation load (py-spy) and the CPU of every process. Prints a
table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lmrec.benchmarks.loadgen import run_load, run_open_loop
from lmrec.benchmarks.serve_ceiling import ceiling_rounds, default_threads, machine_best, replica_view
from lmrec.benchmarks.serve_model import device_name, make_model, model_device, request_bodies
from lmrec.benchmarks.serve_profile import cpu_by_process, profile_under_load
from lmrec.benchmarks.serve_report import median_cells, print_ceiling_summary, print_table, ratios
from lmrec.config import load_config
from lmrec.data.config import DataConfig

HAPROXY_THROUGHPUT = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# name -> (Ray environment, app topology, further app args)
VARIANTS: dict[str, tuple[dict[str, str], str, dict[str, Any]]] = {
    "serve_default_proxy": ({}, "split", {}),
    "serve_haproxy": ({"RAY_SERVE_ENABLE_HA_PROXY": "1"}, "split", {}),
    "serve_haproxy_throughput": (HAPROXY_THROUGHPUT, "split", {}),
    "serve_haproxy_throughput_fused": (HAPROXY_THROUGHPUT, "fused", {}),
    # the same, with POST /recommend through FastAPI's route instead of the plain-ASGI fast path
    "serve_haproxy_throughput_fused_fastapi": (HAPROXY_THROUGHPUT, "fused", {"http_fast_path": False}),
}


def _wait(url: str, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 (not up yet: poll again)
            time.sleep(0.5)
    raise TimeoutError(url)


def _levels(url: str, bodies: list[dict[str, Any]], levels: list[int], total: int) -> dict[str, Any]:
    res = {}
    for c in levels:
        n = total if c > 1 else max(100, total // 5)
        res[f"c{c}"] = run_load(f"{url}/recommend", bodies, c, n).summary()
    return res


def _open_loop(url: str, bodies: list[dict[str, Any]], peak: float, args: argparse.Namespace) -> dict[str, Any]:
    """Latency at each fraction of `peak` (req/s), requests sent on a schedule (open loop, Poisson arrivals)."""
    res = {}
    for frac in args.open_loop:
        rate = frac * peak
        total = max(50, int(rate * args.open_loop_seconds))
        res[f"at_{frac:g}"] = run_open_loop(f"{url}/recommend", bodies, rate, total, args.arrivals).summary()
    return res


def serve_variant(
    name: str,
    env: dict[str, str],
    topology: str,
    model_dir: Path,
    bodies: list[dict[str, Any]],
    args: argparse.Namespace,
    app_extra: dict[str, Any] | None = None,
    profile_to: Path | None = None,
) -> dict[str, Any]:
    import ray
    from ray import serve

    from lmrec.cluster.local import free_port, start_ray_head
    from lmrec.serving import launch

    head = start_ray_head(num_cpus=4, env={**os.environ, **env})
    try:
        ray.init(address=head.address, log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"

        def deploy(batch: int, cache: bool) -> None:
            app_args = {
                "model_uri": str(model_dir),
                "torch_threads": args.threads,
                "forward": args.forward,
                "max_history": 200,
                "device": model_device(args.gpus),
                "batch": {
                    "max_batch_size": batch,
                    "batch_wait_timeout_s": args.wait_s,
                    "rows_per_forward": args.rows_per_forward,
                },
                "cache": {"enabled": cache},
                "alias_poll_s": 0,
                "feedback": {"log_dir": tempfile.mkdtemp(prefix="lmrec-bench-fb-")},
                "topology": topology,
                **(app_extra or {}),
                # the deployment that holds the model: the Ranker (split) or the Ingress (fused)
                "deployments": {
                    "Ranker" if topology == "split" else "Ingress": {
                        "ray_actor_options": {"num_cpus": 1, **({"num_gpus": args.gpus} if args.gpus else {})},
                        "max_ongoing_requests": 512,
                        "num_replicas": args.replicas,
                    }
                },
            }
            serve.run(launch.build_app(app_args), name="bench", route_prefix="/")
            _wait(f"{url}/healthz")

        out: dict[str, Any] = {"env": env, "topology": topology, "app_args": app_extra or {}}
        deploy(args.batch, cache=False)
        out["batching_on"] = _levels(url, bodies, args.levels[:-1], args.requests)
        # The saturation level also reports rows per forward, from the replica's own metric
        # (lmrec_serve_batch_size on Ray's Prometheus endpoint, exported every few seconds).
        before = _metric_sum_count("ray_lmrec_serve_batch_size", settle_s=12)
        out["batching_on"].update(_levels(url, bodies, args.levels[-1:], args.requests))
        after = _metric_sum_count("ray_lmrec_serve_batch_size", settle_s=12)
        forwards = after[1] - before[1]
        out["batching_on"][f"c{args.levels[-1]}"]["rows_per_forward_mean"] = (
            round((after[0] - before[0]) / forwards, 2) if forwards else None
        )
        sat = max(args.levels)
        peak = out["batching_on"][f"c{sat}"]["req_per_s"]
        if args.open_loop:
            out["open_loop"] = _open_loop(url, bodies, peak, args)
        if profile_to is not None:  # after the timed loads: the sampler takes CPU from the replica
            model_deployment = "Ranker" if topology == "split" else "Ingress"
            out["profile"] = profile_under_load(
                f"ServeReplica:bench:{model_deployment}",
                lambda: run_load(f"{url}/recommend", bodies, sat, int(peak * (args.profile_seconds + 4))),
                args.profile_seconds,
                profile_to,
            )
        deploy(1, cache=False)
        out["batching_off"] = {f"c{sat}": run_load(f"{url}/recommend", bodies, sat, args.requests).summary()}
        deploy(args.batch, cache=True)
        hit_body = [bodies[0]]
        run_load(f"{url}/recommend", hit_body, 1, 5)  # populate the cache
        out["cache_hit"] = run_load(f"{url}/recommend", hit_body, 1, 300).summary()
        out["cache_miss"] = run_load(f"{url}/recommend", bodies[1:], 1, 300).summary()
        serve.shutdown()
        return out
    finally:
        ray.shutdown()
        head.stop()


def _metric_sum_count(name: str, settle_s: float) -> tuple[float, float]:
    """(sum, count) of a histogram over this Ray node's Prometheus endpoint, after `settle_s`."""
    import urllib.request

    import ray

    time.sleep(settle_s)  # let the replicas' last observations be exported
    port = ray.nodes()[0]["MetricsExportPort"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    sums = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f"{name}_sum")]
    counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f"{name}_count")]
    return sum(sums), sum(counts)


def fastapi_peer(model_dir: Path, bodies: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    from lmrec.cluster.local import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmrec.benchmarks.serve_peer",
            "--model-uri",
            str(model_dir),
            "--port",
            str(port),
            "--max-batch-size",
            str(args.batch),
            "--batch-wait-timeout-s",
            str(args.wait_s),
            "--threads",
            str(args.threads),
            "--forward",
            args.forward,
            "--device",
            model_device(args.gpus),
            "--workers",
            str(args.peer_workers),
            *(["--rows-per-forward", str(args.rows_per_forward)] if args.rows_per_forward is not None else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(f"{url}/healthz")
        out = {"batching_on": _levels(url, bodies, args.levels, args.requests)}
        if args.open_loop:
            out["open_loop"] = _open_loop(url, bodies, out["batching_on"][f"c{max(args.levels)}"]["req_per_s"], args)
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def run(args: argparse.Namespace) -> dict[str, Any]:
    data_cfg = load_config(DataConfig, None, [f"dataset={args.dataset}", "fallback_to_synthetic=true"])
    work = Path(tempfile.mkdtemp(prefix="lmrec-serve-bench-"))
    import ray

    from lmrec.training.trainer import ensure_ray

    ensure_ray(num_cpus=2)
    model_dir, data = make_model(data_cfg, args.size, work / "model")
    ray.shutdown()
    bodies = request_bodies(data, 2000, args.k)
    result: dict[str, Any] = {
        "model": {"size": args.size, "dataset": data.manifest["dataset"], "num_items": data.num_items},
        "k": args.k,
        "max_batch_size": args.batch,
        "batch_wait_timeout_s": args.wait_s,
        "torch_threads": args.threads,
        "forward": args.forward,
        "rows_per_forward": args.rows_per_forward,
        "levels": args.levels,
        "requests_per_level": args.requests,
        "rounds": args.rounds,
        "replicas": args.replicas,
        "peer_workers": args.peer_workers,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "device": device_name(args.gpus),
        "gpus_per_model_replica": args.gpus,
        "unix_time": int(time.time()),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],  # other jobs on a shared machine
    }
    dev = model_device(args.gpus)  # the peer and the raw forward run where the replicas do, never "auto"
    replica_threads = args.threads or 1  # torch_threads 0: the replica's CPU allotment, num_cpus 1
    threads = sorted(set(args.ceiling_threads or default_threads(replica_threads, os.cpu_count())) | {replica_threads})
    # CPU per process meanwhile: other jobs on the machine show up there (they slow a 2-thread forward most).
    ceiling, ceiling_cpu = cpu_by_process(
        lambda: ceiling_rounds(
            model_dir, bodies, args.batch, threads, args.ceiling_rounds, args.forward, args.rows_per_forward, device=dev
        ),
        self_label="the raw forward (this process)",
    )
    ceiling["machine_best"] = machine_best(ceiling, args.batch)
    ceiling["cpu_by_process"] = ceiling_cpu
    result["raw_ceiling"] = ceiling
    # The replica's own configuration (last-position block, its threads), and the full last block for the A/B.
    result["raw_forward"] = replica_view(ceiling, "last_position", replica_threads)
    result["raw_forward_full_last_block"] = replica_view(ceiling, "full_last_block", replica_threads)
    out_stem = Path(args.out).with_suffix("")
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):  # peer and variants alternate, so drift on a noisy machine hits all of them
        one: dict[str, Any] = {"fastapi_peer": fastapi_peer(model_dir, bodies, args)}
        for name in args.variants:
            env, topology, extra = VARIANTS[name]
            profile_to = (
                Path(f"{out_stem}_profile_{name}.folded.txt") if args.profile and i == args.rounds - 1 else None
            )
            one[name] = serve_variant(name, env, topology, model_dir, bodies, args, extra, profile_to)
        one["ratios"] = ratios({**one, "raw_forward": result["raw_forward"], "raw_ceiling": ceiling}, args)
        rounds.append(one)
        print(
            f"round {i + 1}/{args.rounds}: "
            + json.dumps(
                {
                    k: v.get("throughput_vs_fastapi_peer")
                    for k, v in one["ratios"].items()
                    if isinstance(v, dict) and "throughput_vs_fastapi_peer" in v
                }
            )
        )
    for name in ["fastapi_peer", *args.variants]:
        result[name] = median_cells([{k: v for k, v in r[name].items() if k != "profile"} for r in rounds])
        if "profile" in rounds[-1][name]:
            result[name]["profile"] = rounds[-1][name]["profile"]
    result["ratios"] = ratios(result, args)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.rounds > 1:
        result["per_round"] = rounds
        result["ratios_per_round"] = {name: [r["ratios"][name] for r in rounds] for name in args.variants}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--size", default="small", help="model size (random weights; latency only)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--wait-s", type=float, default=0.005)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--forward",
        default="auto",
        choices=["auto", "eager", "torchscript"],
        help="ServeConfig.forward of the raw ceiling, every Serve variant and the peer alike",
    )
    p.add_argument(
        "--rows-per-forward",
        type=int,
        default=None,
        help="BatchConfig.rows_per_forward for all of them (default: the device's default)",
    )
    p.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    p.add_argument("--requests", type=int, default=1500, help="requests per concurrency level")
    p.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    p.add_argument("--rounds", type=int, default=1, help="repeat peer + variants; cells are medians over rounds")
    p.add_argument("--replicas", type=int, default=1, help="replicas of the deployment that holds the model")
    p.add_argument("--peer-workers", type=int, default=1, help="uvicorn worker processes of the FastAPI peer")
    p.add_argument(
        "--gpus",
        type=float,
        default=0.0,
        help="num_gpus of each model replica (0: CPU). With a GPU, the peer and the raw forward use it too "
        "(ServeConfig device/precision auto: CUDA, bf16)",
    )
    p.add_argument(
        "--ceiling-threads",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="torch thread counts of the raw forward (default: 1, --threads and all cores)",
    )
    p.add_argument("--ceiling-rounds", type=int, default=3, help="alternating rounds of the raw forward")
    p.add_argument(
        "--open-loop",
        type=lambda s: [float(x) for x in s.split(",")] if s else [],
        default=[0.5, 0.8],
        help="offered loads of the open-loop runs, as fractions of each server's closed-loop peak ('' for none)",
    )
    p.add_argument("--open-loop-seconds", type=float, default=8.0, help="scheduled length of each open-loop run")
    p.add_argument("--arrivals", default="poisson", choices=["poisson", "fixed"], help="open-loop arrival process")
    p.add_argument(
        "--profile",
        action="store_true",
        help="in the last round, py-spy the model replica under the saturation load (after the timed loads) and "
        "take CPU per process; collapsed stacks saved beside --out",
    )
    p.add_argument("--profile-seconds", type=float, default=15.0)
    p.add_argument("--out", default="out/benchmark_serve.json")
    args = p.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {sorted(VARIANTS)}")
    if args.ceiling_rounds < 1 or any(t < 1 for t in args.ceiling_threads or []):
        p.error("--ceiling-rounds and --ceiling-threads: at least 1")
    if any(not 0 < f < 1.5 for f in args.open_loop):
        p.error(f"--open-loop {args.open_loop}: fractions of the peak in (0, 1.5)")
    if args.gpus < 0 or (args.gpus > 0 and not torch.cuda.is_available()):
        p.error(f"--gpus {args.gpus}: must be 0 (CPU) or > 0 on a machine where torch sees a CUDA device")
    result = run(args)
    print_table(result, VARIANTS)
    print_ceiling_summary(result, args.variants)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
