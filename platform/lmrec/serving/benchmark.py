"""Serving benchmark: raw forward ceiling vs Ray Serve (proxy and topology variants) vs a plain FastAPI peer.

One run, same model, same request bodies, same machine. For each Serve variant a
fresh Ray head is started with the variant's environment (the proxy settings are
read when Ray starts): Serve's default Python proxy, the HAProxy ingress
(`RAY_SERVE_ENABLE_HA_PROXY=1`), and HAProxy with `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`, the
last with both app topologies (`split`: Ingress -> Ranker; `fused`: the Ingress ranks), and
`fused` once more with POST /recommend through FastAPI's route instead of the ASGI fast path.
Measured per variant: latency percentiles and throughput at several concurrency
levels with batching on, throughput with batching off (max_batch_size=1), and
cache hits vs misses at concurrency 1. Prints a table and writes JSON.
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

import numpy as np
import torch

from lmrec.config import load_config, to_dict
from lmrec.data.config import DataConfig
from lmrec.data.prepare import prepare_dataset
from lmrec.data.sequences import SequenceData
from lmrec.models.artifacts import save_model_dir
from lmrec.models.seqrec import SeqRecModel, init_weights_
from lmrec.models.sizes import build_config
from lmrec.serving.loadgen import run_load

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


def make_model(data_cfg: DataConfig, size: str, out: Path) -> tuple[Path, SequenceData]:
    """A randomly initialised model over the dataset's catalog (latency does not depend on weights)."""
    prepared = prepare_dataset(data_cfg)
    data = SequenceData.load(prepared.path, with_meta=False)
    cfg = build_config(size, data.num_items, dropout=0.0)
    model = SeqRecModel(cfg)
    init_weights_(model, 0)
    save_model_dir(
        out,
        cfg,
        model.state_dict(),
        prepared.manifest["item_ids"],
        {"dataset": prepared.manifest["dataset"], "data_config": to_dict(data_cfg)},
    )
    return out, data


def request_bodies(data: SequenceData, n: int, k: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` distinct explicit-history requests (cache misses), from real user prefixes."""
    rng = np.random.default_rng(seed)
    item_ids = np.asarray(data.manifest["item_ids"])
    bodies, seen = [], set()
    while len(bodies) < n:
        u = int(rng.integers(data.num_users))
        seq = data.sequence(u)
        end = int(rng.integers(3, len(seq) + 1))
        hist = item_ids[seq[max(0, end - 50) : end] - 1].tolist()
        key = tuple(hist)
        if key in seen:
            continue
        seen.add(key)
        bodies.append({"history": hist, "k": k, "explore": False})
    return bodies


def raw_ceiling(
    model_dir: Path,
    bodies: list[dict[str, Any]],
    batch: int,
    threads: int,
    forward: str = "auto",
    rows_per_forward: int | None = None,
    repeats: int = 20,
    last_position_only: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Requests/s of the model forward alone (no HTTP, no Serve) at batch `batch` and 1."""
    from lmrec.config import from_dict
    from lmrec.serving.config import ServeConfig
    from lmrec.serving.runtime import load_model

    torch.set_num_threads(threads)
    cfg = from_dict(
        ServeConfig,
        {
            "model_uri": str(model_dir),
            "torch_threads": threads,
            "forward": forward,
            "device": device,
            "batch": {"rows_per_forward": rows_per_forward},
            "last_position_only": last_position_only,
        },
    )
    loaded = load_model(str(model_dir), cfg)
    rows = cfg.batch.forward_rows(loaded.device.type)
    hists = [loaded.to_idx(b["history"]) for b in bodies]
    k = bodies[0]["k"]
    out: dict[str, Any] = {
        "device": loaded.device.type,
        "forward": loaded.forward,
        "rows_per_forward": rows,
        "last_position_only": loaded.last_position_only,
    }
    for bs in (1, batch):
        loaded.rank(hists[:bs], k, [True] * bs, rows)  # warm-up
        t0 = time.perf_counter()
        for r in range(repeats):
            chunk = [hists[(r * bs + i) % len(hists)] for i in range(bs)]
            loaded.rank(chunk, k, [True] * bs, rows)
        dt = (time.perf_counter() - t0) / repeats
        out[f"batch_{bs}"] = {"forward_ms": round(dt * 1000, 2), "req_per_s": round(bs / dt, 1)}
    return out


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


def serve_variant(
    name: str,
    env: dict[str, str],
    topology: str,
    model_dir: Path,
    bodies: list[dict[str, Any]],
    args: argparse.Namespace,
    app_extra: dict[str, Any] | None = None,
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
            "lmrec.serving.peer",
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
        return {"batching_on": _levels(url, bodies, args.levels, args.requests)}
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
        "device": _device_name(args.gpus),
        "gpus_per_model_replica": args.gpus,
        "unix_time": int(time.time()),
    }
    dev = model_device(args.gpus)  # the peer and the raw forward run where the replicas do, never "auto"
    result["raw_forward"] = raw_ceiling(
        model_dir, bodies, args.batch, args.threads, args.forward, args.rows_per_forward, device=dev
    )
    # The same forward with the last block over every position (ServeConfig.last_position_only: false), for the A/B.
    result["raw_forward_full_last_block"] = raw_ceiling(
        model_dir,
        bodies,
        args.batch,
        args.threads,
        args.forward,
        args.rows_per_forward,
        last_position_only=False,
        device=dev,
    )
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):  # peer and variants alternate, so drift on a noisy machine hits all of them
        one: dict[str, Any] = {"fastapi_peer": fastapi_peer(model_dir, bodies, args)}
        for name in args.variants:
            env, topology, extra = VARIANTS[name]
            one[name] = serve_variant(name, env, topology, model_dir, bodies, args, extra)
        one["ratios"] = ratios({**one, "raw_forward": result["raw_forward"]}, args)
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
        result[name] = median_cells([r[name] for r in rounds])
    result["ratios"] = ratios(result, args)
    if args.rounds > 1:
        result["per_round"] = rounds
        result["ratios_per_round"] = {name: [r["ratios"][name] for r in rounds] for name in args.variants}
    return result


def model_device(gpus: float) -> str:
    """ServeConfig.device for the replicas, the peer and the raw forward: "cuda" with `--gpus` > 0, else "cpu".

    Set explicitly, not "auto": with `--gpus 0` on a CUDA machine the replicas get no GPU,
    and the peer and raw forward (in processes Ray does not place) must not take one either.
    """
    return "cuda" if gpus else "cpu"


def _device_name(gpus: float) -> str:
    """What the replicas, the peer and the raw forward run on: "cpu", or the GPU's name."""
    return f"cuda: {torch.cuda.get_device_name(0)}" if gpus else "cpu"


def median_cells(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Cell-wise median over rounds of the same nested {section: {level: summary}} structure."""
    first = blocks[0]
    if "req_per_s" in first:  # one load summary
        out = dict(first)
        for key in ("req_per_s", "p50_ms", "p95_ms", "p99_ms", "seconds"):
            out[key] = round(float(np.median([b[key] for b in blocks])), 2)
        out["errors"] = int(sum(b["errors"] for b in blocks))
        if all(b.get("rows_per_forward_mean") is not None for b in blocks):
            out["rows_per_forward_mean"] = round(float(np.median([b["rows_per_forward_mean"] for b in blocks])), 2)
        out["rounds"] = len(blocks)
        return out
    return {k: median_cells([b[k] for b in blocks]) if isinstance(v, dict) else v for k, v in first.items()}


def ratios(r: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    sat = f"c{max(args.levels)}"
    ceiling = r["raw_forward"][f"batch_{args.batch}"]["req_per_s"]
    peer = r["fastapi_peer"]["batching_on"][sat]
    out: dict[str, Any] = {}
    for name in args.variants:
        v = r[name]
        on, off = v["batching_on"][sat], v["batching_off"][sat]
        out[name] = {
            "batching_speedup": round(on["req_per_s"] / off["req_per_s"], 2),
            "vs_raw_ceiling": round(on["req_per_s"] / ceiling, 3),
            "cache_hit_p50_over_miss_p50": round(v["cache_hit"]["p50_ms"] / v["cache_miss"]["p50_ms"], 3),
            "throughput_vs_fastapi_peer": round(on["req_per_s"] / peer["req_per_s"], 3),
            "p99_vs_fastapi_peer": round(on["p99_ms"] / peer["p99_ms"], 3),
        }
    out["targets"] = {
        "batching_speedup": ">= 3",
        "vs_raw_ceiling": ">= 0.6",
        "cache_hit_p50_over_miss_p50": "<= 0.2",
        "throughput_vs_fastapi_peer": ">= 1.0",
        "p99_vs_fastapi_peer": "<= 1.0",
    }
    return out


def print_table(r: dict[str, Any]) -> None:
    print(
        f"\nserving benchmark: {r['model']['size']} model over {r['model']['num_items']} items ({r['model']['dataset']}), "
        f"k={r['k']}, batch {r['max_batch_size']}, {r['torch_threads']} torch threads, {r['cpus']} CPUs, "
        f"{r.get('replicas', 1)} model replica(s), {r.get('peer_workers', 1)} peer worker(s), {r.get('rounds', 1)} round(s)"
    )
    for key, label in (
        ("raw_forward", "last block at the scored position only"),
        ("raw_forward_full_last_block", "last block at every position"),
    ):
        rf = r.get(key)
        if rf:
            print(
                f"raw forward (no HTTP, {rf.get('forward', 'eager')}, {label}): "
                + ", ".join(
                    f"{k}: {v['req_per_s']} req/s ({v['forward_ms']} ms)" for k, v in rf.items() if isinstance(v, dict)
                )
            )
    print(f"{'server':<40}{'setting':<16}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name in ["fastapi_peer", *VARIANTS]:
        if name not in r:
            continue
        for section in ("batching_on", "batching_off", "cache_hit", "cache_miss"):
            block = r[name].get(section)
            if not block:
                continue
            rows = block.items() if "req_per_s" not in block else [("c1", block)]
            for level, s in rows:
                setting = f"{section.replace('batching_', 'batch ')} {level}"
                rows_fwd = f"  ({s['rows_per_forward_mean']} rows/forward)" if s.get("rows_per_forward_mean") else ""
                print(
                    f"{name:<40}{setting:<16}{s['req_per_s']:>9.1f}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}"
                    f"{s['errors']:>8}{rows_fwd}"
                )
    print(json.dumps(r["ratios"], indent=1))


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
    p.add_argument("--out", default="out/benchmark_serve.json")
    args = p.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {sorted(VARIANTS)}")
    if args.gpus < 0 or (args.gpus > 0 and not torch.cuda.is_available()):
        p.error(f"--gpus {args.gpus}: must be 0 (CPU) or > 0 on a machine where torch sees a CUDA device")
    result = run(args)
    print_table(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0
