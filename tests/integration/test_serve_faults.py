"""Serving survives process deaths under steady load (real Serve, real HTTP, SIGKILL):

* a Ranker replica is killed: >= 99.9% of requests still succeed (the Ingress retries on the
  surviving or restarted replica) and the replica count recovers;
* the FeedbackLog replica is killed: every feedback answered 2xx is in the Parquet log
  afterwards, and feedback is acknowledged again once the restarted replica is up."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pyarrow.parquet as pq
import pytest
import requests

from lmrec.serving import launch
from support import SERVE_MODEL

pytestmark = pytest.mark.integration
APP = "it-faults"


def _replicas(deployment: str) -> dict[str, int]:
    from ray import serve

    return dict(serve.status().applications[APP].deployments[deployment].replica_states)


def _replica_pids(deployment: str) -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", f"ServeReplica:{APP}:{deployment}"), ("state", "=", "ALIVE")])
    return [a.pid for a in actors if a.pid]


@pytest.fixture(scope="module")
def faults_app(serve_model, serve_http, tmp_path_factory) -> tuple[str, Path]:
    from ray import serve

    log_dir = tmp_path_factory.mktemp("faults") / "feedback"
    args = {
        "model_uri": f"models:/{SERVE_MODEL}@champion",
        "alias_poll_s": 0,
        "cache": {"enabled": False},  # every request reaches a ranker replica
        "feedback": {"log_dir": str(log_dir), "commit_interval_s": 0.01, "max_delay_s": 0.2, "batch_size": 16},
        "exploration": {"policy": {"type": "epsilon_greedy", "epsilon": 0.1}, "num_candidates": 30},
        "deployments": {"Ranker": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5}}},
    }
    serve.run(launch.build_app(args), name=APP, route_prefix="/faults")
    url = f"{serve_http}/faults"
    deadline = time.time() + 180
    while requests.get(f"{url}/healthz", timeout=10).status_code != 200 or _replicas("Ranker").get("RUNNING", 0) < 2:
        assert time.time() < deadline, "the app never became healthy with 2 rankers"
        time.sleep(0.5)
    yield url, log_dir
    serve.delete(APP)


async def _drive(
    url: str,
    seconds_after_kill: float,
    kill,
    recovered,
    feedback: bool,  # type: ignore[no-untyped-def]
    concurrency: int = 6,
) -> tuple[list[int], list[tuple[str, int, int]]]:
    """Steady load; `kill()` after 3 s; stop `seconds_after_kill` after `recovered()` is true."""
    statuses: list[int] = []
    acks: list[tuple[str, int, int]] = []  # (request_id, item_id, feedback status)
    stop = asyncio.Event()

    async def worker(session: aiohttp.ClientSession, i: int) -> None:
        while not stop.is_set():
            async with session.post(f"{url}/recommend", json={"history": [1 + i % 7, 2, 3], "k": 3}) as r:
                body = await r.json()
                statuses.append(r.status)
            if feedback and r.status == 200:
                item = body["items"][0]
                async with session.post(
                    f"{url}/feedback", json={"request_id": body["request_id"], "item_id": item, "reward": 1}
                ) as f:
                    acks.append((body["request_id"], item, f.status))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        tasks = [asyncio.create_task(worker(session, i)) for i in range(concurrency)]
        await asyncio.sleep(3.0)
        kill()
        deadline = time.monotonic() + 150
        await asyncio.sleep(2.0)
        while not recovered() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(seconds_after_kill)
        stop.set()
        await asyncio.gather(*tasks)
    return statuses, acks


def test_ranker_replica_killed_under_load(faults_app) -> None:  # type: ignore[no-untyped-def]
    url, _ = faults_app
    pids = _replica_pids("Ranker")
    assert len(pids) == 2
    killed: list[int] = []

    def kill() -> None:
        killed.append(pids[0])
        os.kill(pids[0], signal.SIGKILL)

    def recovered() -> bool:
        alive = set(_replica_pids("Ranker"))
        return len(alive) == 2 and pids[0] not in alive and _replicas("Ranker").get("RUNNING", 0) == 2

    statuses, _ = asyncio.run(_drive(url, 3.0, kill, recovered, feedback=False))
    ok = sum(1 for s in statuses if s == 200)
    assert killed and len(statuses) > 100
    assert ok / len(statuses) >= 0.999, f"{len(statuses) - ok} of {len(statuses)} failed: {sorted(set(statuses))}"
    assert recovered(), f"replicas did not recover: {_replicas('Ranker')}"


def test_feedback_log_killed_under_load_keeps_every_acknowledged_record(faults_app) -> None:  # type: ignore[no-untyped-def]
    url, log_dir = faults_app
    pids = _replica_pids("FeedbackLog")
    assert len(pids) == 1
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        os.kill(pids[0], signal.SIGKILL)

    def recovered() -> bool:
        alive = _replica_pids("FeedbackLog")
        return len(alive) == 1 and alive[0] != pids[0] and _replicas("FeedbackLog").get("RUNNING", 0) == 1

    statuses, acks = asyncio.run(_drive(url, 4.0, kill, recovered, feedback=True))
    assert killed_at and recovered()
    acked = {(rid, item) for rid, item, status in acks if status == 200}
    assert len(acked) > 50
    written = set()
    for f in (log_dir / "feedback").rglob("*.parquet"):
        t = pq.read_table(f, columns=["request_id", "item_id"])
        written |= set(zip(t.column("request_id").to_pylist(), t.column("item_id").to_pylist()))
    missing = acked - written
    assert not missing, f"{len(missing)} acknowledged feedback records are not in the log"
    # the log works again after the restart: the last feedback calls were acknowledged
    tail = [status for _, _, status in acks[-20:]]
    assert tail.count(200) >= 15, tail
    assert all(s < 500 or s == 503 for _, _, s in acks), sorted({s for _, _, s in acks})
    assert all(s == 200 for s in statuses), sorted(set(statuses))  # ranking never depended on the log
