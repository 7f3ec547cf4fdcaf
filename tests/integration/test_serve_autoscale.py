"""Autoscaling on real Ray Serve: load drives the Ranker's replica count up, and it falls
back to the minimum once the load stops (short delays from the test config). The replicas
that scale down ship their buffered impressions as they stop: every slate served is in the
Parquet log afterwards."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pyarrow.parquet as pq
import pytest
import requests

from lmrec.serving import launch
from support import SERVE_MODEL

pytestmark = pytest.mark.integration


def _ranker_replicas(app: str) -> int:
    from ray import serve

    status = serve.status().applications[app].deployments["Ranker"]
    return int(status.replica_states.get("RUNNING", 0))


def _starting_or_stopping(app: str) -> int:
    """Replicas not RUNNING yet, or stopping (draining, then `__del__`): both still count here."""
    from ray import serve

    states = serve.status().applications[app].deployments["Ranker"].replica_states
    return int(states.get("STARTING", 0)) + int(states.get("STOPPING", 0))


def test_ranker_scales_up_under_load_and_back_down(serve_model, serve_http, tmp_path: Path) -> None:
    from ray import serve

    args = {
        "model_uri": f"models:/{SERVE_MODEL}@champion",
        # Impressions leave a replica only at stop (or on `flush`) in this test, so a replica that
        # scales down without shipping its buffer loses slates, and the check below sees it.
        "feedback": {"log_dir": str(tmp_path / "fb"), "impression_ship_s": 3600},
        "cache": {"enabled": False},  # every request reaches the model
        "batch": {"max_batch_size": 4, "batch_wait_timeout_s": 0.01},
        "deployments": {
            "Ranker": {
                "max_ongoing_requests": 8,
                "ray_actor_options": {"num_cpus": 0.5},
                "autoscaling_config": {
                    "min_replicas": 1,
                    "max_replicas": 2,  # one scale-up step proves it; a third replica is one more torch import
                    "target_ongoing_requests": 2,
                    "upscale_delay_s": 1,
                    "downscale_delay_s": 4,
                    "metrics_interval_s": 0.5,
                    "look_back_period_s": 2,
                },
            }
        },
    }
    serve.run(launch.build_app(args), name="it-scale", route_prefix="/scale")
    url = f"{serve_http}/scale"
    deadline = time.time() + 120
    while requests.get(f"{url}/healthz").status_code != 200:
        assert time.time() < deadline, "app never became healthy"
        time.sleep(0.5)
    assert _ranker_replicas("it-scale") == 1

    observed: list[int] = []
    served: list[str] = []  # request ids answered 200

    async def drive(max_seconds: float) -> int:
        """Load until a second replica is RUNNING (a new replica imports torch: slow on 2 cores)."""
        stop = time.monotonic() + max_seconds
        done = asyncio.Event()
        ok = 0

        async def worker(session: aiohttp.ClientSession, i: int) -> None:
            nonlocal ok
            while time.monotonic() < stop and not done.is_set():
                async with session.post(f"{url}/recommend", json={"history": [1 + i % 7, 2, 3], "k": 5}) as r:
                    ok += r.status == 200
                    if r.status == 200:
                        served.append((await r.json())["request_id"])

        async def watch() -> None:
            while time.monotonic() < stop:
                observed.append(_ranker_replicas("it-scale"))
                if observed[-1] >= 2 and len(observed) >= 5:
                    await asyncio.sleep(2.0)  # a little load on the scaled-up deployment
                    done.set()
                    return
                await asyncio.sleep(1.0)

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(watch(), *(worker(session, i) for i in range(24)))
        return ok

    ok = asyncio.run(drive(120.0))
    assert ok > 100 and len(served) == ok
    assert max(observed) >= 2, f"replicas never rose above 1 under load: {observed}"

    deadline = time.time() + 90
    while _ranker_replicas("it-scale") > 1 or _starting_or_stopping("it-scale"):
        assert time.time() < deadline, "replicas did not fall back after the load stopped"
        time.sleep(1.0)

    # The replicas that stopped shipped their slates in `__del__`; the one left ships on `flush`.
    left = serve.get_deployment_handle("Ranker", "it-scale").flush.remote().result(timeout_s=30)
    assert left["shipped"] and left["buffered_impressions"] == 0, left
    stats = serve.get_deployment_handle("FeedbackLog", "it-scale").flush.remote().result(timeout_s=30)
    assert stats["impressions_logged"] == len(served), stats
    logged: set[str] = set()
    for f in (tmp_path / "fb" / "impressions").rglob("*.parquet"):
        logged |= set(pq.read_table(f, columns=["request_id"]).column("request_id").to_pylist())
    missing = set(served) - logged
    assert not missing, f"{len(missing)} of {len(served)} served slates are not in the impression log"
    serve.delete("it-scale")
