"""An async HTTP load generator with a bounded request count (loopback targets only)."""

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
