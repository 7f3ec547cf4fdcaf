"""Serving through a replica's death: steady closed-loop load, one SIGKILL, the worst latency and recovery.

`drive` keeps `concurrency` clients posting /recommend (and, optionally, /feedback for the first
item of each slate), calls `kill()` after `before_s`, waits until `recovered()` holds and stops
`after_s` later. Every request's start, latency and status are kept, so the worst latency of the
requests in flight around the kill is measured, not averaged away. Used by
jobs/benchmark_replica_kill.py (one against two replicas) and by the serving fault tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class KillRun:
    """What the clients saw: per request its start (s since the load began), latency (ms) and status."""

    starts_s: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    acks: list[tuple[str, int, int]] = field(default_factory=list)  # (request_id, item_id, /feedback status)
    killed_at_s: float | None = None
    recovered_after_s: float | None = None  # from the kill until `recovered()` first held

    @property
    def failed(self) -> int:
        return sum(1 for s in self.statuses if s != 200)

    def failed_in_flight_at_kill(self) -> int:
        """Failed requests that had started before the kill (the dead replica may have held them)."""
        kill = self.killed_at_s if self.killed_at_s is not None else float("inf")
        return sum(1 for s, t in zip(self.statuses, self.starts_s) if s != 200 and t <= kill)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "requests": len(self.statuses),
            "failed": self.failed,
            "failed_started_before_kill": self.failed_in_flight_at_kill(),
            "statuses": {str(s): self.statuses.count(s) for s in sorted(set(self.statuses))},
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "worst_ms": round(float(lat.max()), 1),
            "recovered_after_s": None if self.recovered_after_s is None else round(self.recovered_after_s, 1),
        }


def replica_pids(app: str, deployment: str) -> list[int]:
    """PIDs of the live replica actors of `deployment` in Serve application `app`."""
    import ray
    from ray.util.state import list_actors

    # the cluster this driver is connected to: with no address the state API auto-detects, and
    # fails when more than one Ray instance runs on the machine (a test's own head beside another)
    address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    filters = [("class_name", "=", f"ServeReplica:{app}:{deployment}"), ("state", "=", "ALIVE")]
    actors = list_actors(address=address, filters=filters)  # type: ignore[arg-type]
    return sorted(a.pid for a in actors if a.pid)


def running_replicas(app: str, deployment: str) -> int:
    from ray import serve

    return int(serve.status().applications[app].deployments[deployment].replica_states.get("RUNNING", 0))


def kill_one(app: str, deployment: str) -> tuple[Callable[[], None], Callable[[], bool]]:
    """(kill, recovered): SIGKILL one replica of `deployment`; recovered once as many run again, without it."""
    pids = replica_pids(app, deployment)
    if not pids:
        raise RuntimeError(f"no live replica of {app}:{deployment}")
    victim, want = pids[0], len(pids)

    def kill() -> None:
        os.kill(victim, signal.SIGKILL)  # a real process death, mid-request

    def recovered() -> bool:
        alive = replica_pids(app, deployment)
        return len(alive) == want and victim not in alive and running_replicas(app, deployment) == want

    return kill, recovered


async def drive(
    url: str,
    kill: Callable[[], None],
    recovered: Callable[[], bool],
    bodies: Sequence[dict[str, Any]],
    *,
    concurrency: int = 16,
    before_s: float = 3.0,
    after_s: float = 3.0,
    feedback: bool = False,
    recover_timeout_s: float = 150.0,
) -> KillRun:
    """Closed-loop load on `url` (the app's route prefix) through `kill()`; see the module docstring."""
    import aiohttp

    run = KillRun()
    stop = asyncio.Event()
    t0 = time.perf_counter()

    async def client(session: aiohttp.ClientSession, i: int) -> None:
        n = i
        while not stop.is_set():
            body = bodies[n % len(bodies)]
            n += concurrency
            start = time.perf_counter()
            try:
                async with session.post(f"{url}/recommend", json=body) as r:
                    status = r.status
                    out = await r.json(content_type=None) if status == 200 else None
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                out, status = None, -1  # connection reset, timeout or a broken body: a failed request
            run.starts_s.append(start - t0)
            run.latencies_ms.append((time.perf_counter() - start) * 1000)
            run.statuses.append(status)
            if feedback and status == 200 and out["items"]:
                fb = {"request_id": out["request_id"], "item_id": out["items"][0], "reward": 1}
                try:
                    async with session.post(f"{url}/feedback", json=fb) as f:
                        run.acks.append((fb["request_id"], fb["item_id"], f.status))
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    run.acks.append((fb["request_id"], fb["item_id"], -1))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        tasks = [asyncio.create_task(client(session, i)) for i in range(concurrency)]
        await asyncio.sleep(before_s)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, kill)
        run.killed_at_s = time.perf_counter() - t0
        deadline = time.monotonic() + recover_timeout_s
        while time.monotonic() < deadline:
            # state API calls block for a moment: off the event loop, so the clients keep going
            if await loop.run_in_executor(None, recovered):
                run.recovered_after_s = time.perf_counter() - t0 - run.killed_at_s
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(after_s)
        stop.set()
        await asyncio.gather(*tasks)
    return run


def run_through_kill(url: str, app: str, deployment: str, bodies: Sequence[dict[str, Any]], **kw: Any) -> KillRun:
    """Kill one replica of `app:deployment` under load on `url`; see `drive`."""
    kill, recovered = kill_one(app, deployment)
    return asyncio.run(drive(url, kill, recovered, bodies, **kw))


def _deploy(url: str, model_dir: str, topology: str, replicas: int, log_dir: str) -> str:
    """Deploy app `kill` with `replicas` replicas of the deployment holding the model; wait until all run."""
    import urllib.request

    from ray import serve

    from lmrec.serving import launch

    deployment = "Ranker" if topology == "split" else "Ingress"
    args = {
        "model_uri": model_dir,
        "topology": topology,
        "alias_poll_s": 0,
        "cache": {"enabled": False},
        "torch_threads": 1,
        "feedback": {"log_dir": log_dir},
        "deployments": {deployment: {"num_replicas": replicas, "ray_actor_options": {"num_cpus": 1}}},
    }
    serve.run(launch.build_app(args), name="kill", route_prefix="/")
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                if r.status == 200 and running_replicas("kill", deployment) == replicas:
                    return deployment
        except Exception:  # noqa: BLE001 (not up yet: poll again)
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{topology} with {replicas} replicas never became healthy")


def run(args: Any) -> dict[str, Any]:
    """Every (topology, replicas) cell, `args.rounds` kills each; rounds alternate over the cells."""
    # Ray >= 2.60 heads require a token; Ray reads the mode when it is first imported, so set it before.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import platform
    import tempfile
    from pathlib import Path

    import ray
    from ray import serve

    from lmrec.benchmarks.serve_model import make_model, request_bodies
    from lmrec.cluster.local import free_port, start_ray_head
    from lmrec.config import load_config
    from lmrec.data.config import DataConfig

    work = Path(tempfile.mkdtemp(prefix="lmrec-kill-bench-"))
    data_cfg = load_config(DataConfig, None, [f"dataset={args.dataset}", "fallback_to_synthetic=true"])
    head = start_ray_head(num_cpus=4, env=dict(os.environ))
    cells = [(t, r) for t in args.topologies for r in args.replicas]
    per_round: dict[str, list[dict[str, Any]]] = {f"{t}_r{r}": [] for t, r in cells}
    try:
        ray.init(address=head.address, log_to_driver=False)
        model_dir, data = make_model(data_cfg, args.size, work / "model")
        bodies = request_bodies(data, 500, 10)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        for i in range(args.rounds):
            for topology, replicas in cells:
                deployment = _deploy(url, str(model_dir), topology, replicas, str(work / "feedback"))
                kr = run_through_kill(url, "kill", deployment, bodies, concurrency=args.concurrency)
                per_round[f"{topology}_r{replicas}"].append(kr.summary())
                print(f"round {i + 1} {topology} x{replicas}: {kr.summary()}", flush=True)
                serve.delete("kill")
        serve.shutdown()
    finally:
        ray.shutdown()
        head.stop()
    out: dict[str, Any] = {
        "model": {"size": args.size, "dataset": data.manifest["dataset"], "num_items": data.num_items},
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "unix_time": int(time.time()),
        "cells": {},
    }
    for name, runs in per_round.items():
        worst = [r["worst_ms"] for r in runs]
        out["cells"][name] = {
            "worst_ms_median": float(np.median(worst)),
            "worst_ms_min": min(worst),
            "worst_ms_max": max(worst),
            "p99_ms_median": float(np.median([r["p99_ms"] for r in runs])),
            "failed_total": sum(r["failed"] for r in runs),
            "requests_total": sum(r["requests"] for r in runs),
            "recovered_after_s_median": float(np.median([r["recovered_after_s"] or np.nan for r in runs])),
            "per_round": runs,
        }
    return out


def print_table(result: dict[str, Any]) -> None:
    print(f"\nOne replica SIGKILLed under {result['concurrency']} closed-loop clients, {result['rounds']} rounds")
    print(
        f"{'cell':<12} {'worst ms (median [min, max])':>30} {'p99 ms':>8} {'failed/requests':>16} {'back after s':>12}"
    )
    for name, c in result["cells"].items():
        spread = f"{c['worst_ms_median']:.0f} [{c['worst_ms_min']:.0f}, {c['worst_ms_max']:.0f}]"
        failed = f"{c['failed_total']}/{c['requests_total']}"
        print(f"{name:<12} {spread:>30} {c['p99_ms_median']:>8.0f} {failed:>16} {c['recovered_after_s_median']:>12.1f}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from lmrec.benchmarks.output import write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--size", default="small", help="model size (random weights)")
    p.add_argument("--topologies", type=lambda s: s.split(","), default=["split", "fused"])
    p.add_argument("--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="out/benchmark_replica_kill.json")
    args = p.parse_args(argv)
    bad = sorted(set(args.topologies) - {"split", "fused"})
    if bad or min(args.replicas) < 1 or args.rounds < 1 or args.concurrency < 1:
        p.error(f"--topologies from split,fused (got {bad}); --replicas, --rounds, --concurrency >= 1")
    result = run(args)
    print_table(result)
    print(f"wrote {write_json(result, args.out)}")
    return 0
