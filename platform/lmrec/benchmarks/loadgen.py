"""Async HTTP load generators with a bounded request count (loopback targets only): closed loop (a fixed
number of requests in flight) and open loop (requests sent on a schedule, whatever the responses)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray
    statuses: dict[int, int]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms if len(self.latencies_ms) else np.zeros(1)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "req_per_s": round(self.throughput, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "statuses": {str(k): v for k, v in self.statuses.items()},
        }


async def _run(
    url: str,
    bodies: Sequence[dict[str, Any]],
    concurrency: int,
    total: int,
    headers: dict[str, str] | None,
    warmup: int,
) -> LoadResult:
    import aiohttp

    counter = itertools.count()
    lat: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as session:
        for i in range(warmup):  # connections, JIT-ish first forward, replica caches of code
            async with session.post(url, json=bodies[i % len(bodies)]) as r:
                await r.read()

        async def worker() -> None:
            nonlocal errors
            while True:
                i = next(counter)
                if i >= total:
                    return
                t0 = time.perf_counter()
                try:
                    async with session.post(url, json=bodies[i % len(bodies)]) as r:
                        await r.read()
                        statuses[r.status] = statuses.get(r.status, 0) + 1
                        if r.status != 200:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                    statuses[-1] = statuses.get(-1, 0) + 1
                lat.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    return LoadResult(total, errors, seconds, np.asarray(lat), statuses)


def run_load(
    url: str,
    bodies: Sequence[dict[str, Any]],
    concurrency: int,
    total: int,
    headers: dict[str, str] | None = None,
    warmup: int = 20,
) -> LoadResult:
    """POST `total` requests (cycling through `bodies`) with `concurrency` in flight."""
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError(f"load generation targets loopback only, got {url}")
    return asyncio.run(_run(url, bodies, concurrency, total, headers, warmup))


@dataclass
class OpenLoopResult:
    """An open-loop run: latency counted from each request's scheduled send time, not its actual one."""

    offered_per_s: float
    load: LoadResult
    send_lag_ms: np.ndarray  # actual minus scheduled send time: large values mean the client fell behind
    max_in_flight: int

    def summary(self) -> dict[str, Any]:
        lag = self.send_lag_ms if len(self.send_lag_ms) else np.zeros(1)
        return {
            **self.load.summary(),
            "offered_req_per_s": round(self.offered_per_s, 1),
            "send_lag_p50_ms": round(float(np.percentile(lag, 50)), 2),
            "send_lag_p99_ms": round(float(np.percentile(lag, 99)), 2),
            "max_in_flight": self.max_in_flight,
        }


def arrival_offsets(rate: float, total: int, arrivals: str = "poisson", seed: int = 0) -> np.ndarray:
    """Send times in seconds from the start, the first at 0: Poisson (exponential gaps) or fixed-interval."""
    if rate <= 0 or total < 1:
        raise ValueError(f"rate and total must be positive, got {rate}, {total}")
    if arrivals == "poisson":
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, total)
    elif arrivals == "fixed":
        gaps = np.full(total, 1.0 / rate)
    else:
        raise ValueError(f"arrivals: 'poisson' or 'fixed', got {arrivals!r}")
    return np.cumsum(gaps) - gaps[0]


async def _run_open(
    url: str,
    bodies: Sequence[dict[str, Any]],
    offsets: np.ndarray,
    headers: dict[str, str] | None,
    warmup: int,
    max_connections: int,
) -> tuple[LoadResult, np.ndarray, int]:
    import aiohttp

    lat: list[float] = []
    lag: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    in_flight = max_in_flight = 0
    conn = aiohttp.TCPConnector(limit=max_connections)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as session:
        for i in range(warmup):
            async with session.post(url, json=bodies[i % len(bodies)]) as r:
                await r.read()

        async def one(i: int, scheduled: float) -> None:
            nonlocal errors, in_flight, max_in_flight
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
            lag.append((time.perf_counter() - scheduled) * 1000)
            try:
                async with session.post(url, json=bodies[i % len(bodies)]) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    if r.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
                statuses[-1] = statuses.get(-1, 0) + 1
            lat.append((time.perf_counter() - scheduled) * 1000)
            in_flight -= 1

        tasks = []
        t0 = time.perf_counter()
        for i, off in enumerate(offsets):
            scheduled = t0 + float(off)
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # Sent on schedule whatever is still in flight: a slow response delays no later request.
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - t0
    return LoadResult(len(offsets), errors, seconds, np.asarray(lat), statuses), np.asarray(lag), max_in_flight


def run_open_loop(
    url: str,
    bodies: Sequence[dict[str, Any]],
    rate: float,
    total: int,
    arrivals: str = "poisson",
    seed: int = 0,
    headers: dict[str, str] | None = None,
    warmup: int = 20,
    max_connections: int = 1024,
) -> OpenLoopResult:
    """POST `total` requests at `rate` per second on a fixed schedule (open loop), whatever the responses.

    Each latency runs from the request's scheduled send time, so a stall of the server (or of this
    client) counts against every request that should have been sent during it: no coordinated omission.
    """
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError(f"load generation targets loopback only, got {url}")
    offsets = arrival_offsets(rate, total, arrivals, seed)
    load, lag, peak = asyncio.run(_run_open(url, bodies, offsets, headers, warmup, max_connections))
    return OpenLoopResult(rate, load, lag, peak)
