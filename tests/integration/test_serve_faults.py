"""Serving survives process deaths under steady load, and its feedback log runs as shards
(real Serve, real HTTP, SIGKILL). One `split` app with two Rankers and two log shards serves:

* each slate is logged by the shard its request_id hashes to, and `/feedback` reaches that shard
  whichever shard the other slates went to: every click is joined with its slate's position and
  propensity;
* the exploration search's readers see one log: slates and clicks of both shards, joined, and a
  policy scored off-policy on them;
* one shard is SIGKILLed under load: every acknowledged click is on disk, the other shard keeps
  acknowledging, and the restarted shard takes back its own slates (their clicks join, retried
  clicks are refused as duplicates). A one-shard log is the same FeedbackLogCore: its death
  costs 503s on /feedback until it is back, never an acknowledged click;
* one of the two Rankers is SIGKILLed under load: no request fails (the Ingress retries on the
  surviving replica), none waits for the replacement to load its model, and the replica comes back.

Topology `fused` with two Ingress replicas (the Ingress holds the model) loses one, behind HAProxy
with the retry policy the cluster configs ship (`RAY_SERVE_HAPROXY_RETRY_ON='conn-failure
empty-response'`): no request fails (HAProxy resends what the dead replica held), none is slow, and
the replica comes back. That test starts its own Ray head, since the proxy is chosen when Ray starts.
Behind Serve's default proxy the requests the dead replica held fail with 500 (docs/serving.md).

The worst latency through a kill with one and with two replicas is measured by
jobs/benchmark_replica_kill.py (docs/benchmarks.md); here it is held to a bound.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.parquet as pq
import pytest
import requests

from lmrec.benchmarks.replica_kill import run_through_kill, running_replicas
from lmrec.serving import launch
from lmrec.serving.shards import owner_shard
from support import SERVE_MODEL

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
APP = "it-faults"
SHARDS = 2
CLIENTS = 8
# A request caught by the kill is retried on the surviving replica: it waits for a retry, not for
# a replacement to start and load the model (that stall is what a single replica costs: tens of s).
WORST_MS = 5000.0
BODIES = [{"history": [1 + i % 7, 2 + i % 5, 3], "k": 3} for i in range(35)]


def _replicas(deployment: str) -> dict[str, int]:
    from ray import serve

    return dict(serve.status().applications[APP].deployments[deployment].replica_states)


def _replica_pids(deployment: str) -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", f"ServeReplica:{APP}:{deployment}"), ("state", "=", "ALIVE")])
    return [a.pid for a in actors if a.pid]


def _written(log_dir: Path) -> set[tuple[str, int]]:
    rows: set[tuple[str, int]] = set()
    for f in (log_dir / "feedback").rglob("*.parquet"):
        t = pq.read_table(f, columns=["request_id", "item_id"])
        rows |= set(zip(t.column("request_id").to_pylist(), t.column("item_id").to_pylist()))
    return rows


@pytest.fixture(scope="module")
def shards_app(serve_model, serve_http, tmp_path_factory) -> tuple[str, Path]:  # type: ignore[no-untyped-def]
    from ray import serve

    log_dir = tmp_path_factory.mktemp("shards") / "feedback"
    args = {
        "model_uri": f"models:/{SERVE_MODEL}@champion",
        "alias_poll_s": 0,
        "cache": {"enabled": False},
        "feedback": {
            "log_dir": str(log_dir),
            "shards": SHARDS,
            "commit_interval_s": 0.01,
            "max_delay_s": 0.2,
            "batch_size": 16,
        },
        "exploration": {"policy": {"type": "epsilon_greedy", "epsilon": 0.2}, "num_candidates": 30},
        "deployments": {"Ranker": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5}}},
    }
    serve.run(launch.build_app(args), name=APP, route_prefix="/faults")
    url = f"{serve_http}/faults"
    deadline = time.time() + 180
    while (
        requests.get(f"{url}/healthz", timeout=10).status_code != 200
        or _replicas("FeedbackLog1").get("RUNNING") != 1
        or _replicas("Ranker").get("RUNNING") != 2
    ):
        assert time.time() < deadline, "the app never became healthy with 2 rankers and 2 log shards"
        time.sleep(0.5)
    yield url, log_dir
    serve.delete(APP)


@pytest.fixture(scope="module")
def clicked(shards_app) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """40 slates served, each clicked at position 1 and acknowledged; all flushed to disk."""
    from ray import serve

    url, _ = shards_app
    served = []
    for i in range(40):
        r = requests.post(f"{url}/recommend", json={"history": [1 + i % 9, 2, 3], "k": 3}, timeout=30)
        assert r.status_code == 200, r.text
        served.append(r.json())
    for body in served:
        fb = requests.post(
            f"{url}/feedback", json={"request_id": body["request_id"], "item_id": body["items"][1], "reward": 1}
        )
        assert fb.status_code == 200, fb.text
        body["ack"] = fb.json()
    serve.get_deployment_handle("Ranker", APP).flush.remote().result(timeout_s=30)
    return served


def test_each_shard_owns_its_slates_and_joins_their_clicks(shards_app, clicked) -> None:  # type: ignore[no-untyped-def]
    from ray import serve

    url, log_dir = shards_app
    assert set(serve.status().applications[APP].deployments) == {"Ingress", "Ranker", "FeedbackLog", "FeedbackLog1"}
    owners = [owner_shard(b["request_id"], SHARDS) for b in clicked]
    assert 0 < owners.count(0) < len(clicked)  # both shards own some of them
    for body in clicked:  # joined on its owner, whichever shard the neighbouring slates went to
        ack = body["ack"]
        assert ack["status"] == "recorded" and ack["position"] == 1
        assert ack["propensity"] == pytest.approx(body["propensities"][1])

    stats = launch.feedback_log_stats(APP, flush=True)
    assert stats["impressions_logged"] == len(clicked) and stats["feedback_events"] == len(clicked)
    assert [s["impressions_logged"] for s in stats["shards"]] == [owners.count(0), owners.count(1)]
    assert [s["feedback_events"] for s in stats["shards"]] == [owners.count(0), owners.count(1)]
    for shard in range(SHARDS):  # one layout, files tagged by the shard that wrote them
        files = list((log_dir / "impressions").rglob(f"*-s{shard}of{SHARDS}-*.parquet"))
        ids = [rid for f in files for rid in pq.read_table(f, columns=["request_id"]).column(0).to_pylist()]
        assert ids and all(owner_shard(rid, SHARDS) == shard for rid in ids)
        assert list((log_dir / "feedback").rglob(f"*-s{shard}of{SHARDS}-*.parquet"))


def test_the_exploration_search_reads_both_shards_as_one_log(shards_app, clicked) -> None:  # type: ignore[no-untyped-def]
    """What the search's `logs` scenario does (Ray Data readers, join, reward model), then one policy
    scored off-policy as a Tune trial would, without the Tune run."""
    from lmrec.exploration.objectives import evaluate_logged
    from lmrec.exploration.policies import PolicyConfig
    from lmrec.tuning.exploration.config import LogsScenarioConfig
    from lmrec.tuning.exploration.scenarios import prepare_logs
    from lmrec.tuning.feedback_io import read_served_logs

    _, log_dir = shards_app
    launch.feedback_log_stats(APP, flush=True)
    table, info = read_served_logs(log_dir, attribution_window_s=0)
    ids = {b["request_id"] for b in clicked}
    assert ids <= set(table.column("request_id").to_pylist())
    assert info["events_without_slate"] == 0 and info["events_joined"] >= len(clicked)
    rewards = dict(zip(table.column("request_id").to_pylist(), table.column("rewards").to_pylist()))
    assert all(rewards[rid][1] == 1.0 for rid in ids)  # every click of both shards, at its position

    scenario = prepare_logs(
        LogsScenarioConfig(path=str(log_dir), attribution_window_s=0, n_bootstrap=20, n_sim=50, l2=1.0)
    )
    assert scenario.info["requests"] == table.num_rows
    policy = PolicyConfig.from_dict({"type": "epsilon_greedy", "epsilon": 0.3, **scenario.base_policy})
    scored = evaluate_logged(scenario, policy, penalty=0.0)
    assert math.isfinite(scored["estimate"]) and scored["samples"] > 0


async def _drive(url: str, kill, recovered) -> list[tuple[str, int, int, float]]:  # type: ignore[no-untyped-def]
    """Recommend + click at steady load; `kill()` after 3 s; stop 3 s after `recovered()`."""
    acks: list[tuple[str, int, int, float]] = []  # (request_id, item_id, feedback status, when)
    stop = asyncio.Event()

    async def worker(session: aiohttp.ClientSession, i: int) -> None:
        while not stop.is_set():
            async with session.post(f"{url}/recommend", json={"history": [1 + i % 7, 2, 3], "k": 3}) as r:
                assert r.status == 200, await r.text()  # ranking never depends on the log
                body = await r.json()
            item = body["items"][0]
            async with session.post(
                f"{url}/feedback", json={"request_id": body["request_id"], "item_id": item, "reward": 1}
            ) as f:
                acks.append((body["request_id"], item, f.status, time.monotonic()))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        tasks = [asyncio.create_task(worker(session, i)) for i in range(6)]
        await asyncio.sleep(3.0)
        kill()
        deadline = time.monotonic() + 150
        await asyncio.sleep(2.0)
        while not recovered() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.0)
        stop.set()
        await asyncio.gather(*tasks)
    return acks


def test_a_killed_shard_loses_no_acknowledged_click_and_recovers_its_own_slates(shards_app, clicked) -> None:  # type: ignore[no-untyped-def]
    url, log_dir = shards_app
    pids = _replica_pids("FeedbackLog1")
    assert len(pids) == 1
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        os.kill(pids[0], signal.SIGKILL)

    def recovered() -> bool:
        alive = _replica_pids("FeedbackLog1")
        return len(alive) == 1 and alive[0] != pids[0] and _replicas("FeedbackLog1").get("RUNNING", 0) == 1

    acks = asyncio.run(_drive(url, kill, recovered))
    assert killed_at and recovered()
    acked = {(rid, item) for rid, item, status, _ in acks if status == 200}
    assert len(acked) > 50
    missing = acked - _written(log_dir)
    assert not missing, f"{len(missing)} acknowledged feedback records are not in the log"
    assert all(s < 500 or s == 503 for _, _, s, _ in acks), sorted({s for _, _, s, _ in acks})
    # the surviving shard kept acknowledging its clicks while the other one was down
    survivor = [s for rid, _, s, when in acks if owner_shard(rid, SHARDS) == 0 and when > killed_at[0]]
    assert survivor and survivor.count(200) >= 0.98 * len(survivor), sorted(set(survivor))
    tail = [s for _, _, s, _ in acks[-20:]]  # and the restarted one acknowledges again
    assert tail.count(200) >= 15, tail

    # the restarted shard took back its own slates from disk: served before the kill, they still
    # join, and their acknowledged clicks are refused as duplicates
    for body in clicked:
        if owner_shard(body["request_id"], SHARDS) != 1:
            continue
        again = requests.post(
            f"{url}/feedback", json={"request_id": body["request_id"], "item_id": body["items"][1], "reward": 1}
        )
        assert again.status_code == 409, again.text
        first = requests.post(
            f"{url}/feedback", json={"request_id": body["request_id"], "item_id": body["items"][0], "reward": 0}
        )
        assert first.status_code == 200 and first.json()["position"] == 0, first.text


def _check_no_failure_no_stall(run, app: str, deployment: str) -> None:  # type: ignore[no-untyped-def]
    s = run.summary()
    assert s["requests"] > 100, s
    assert s["failed"] == 0, s
    assert s["worst_ms"] < WORST_MS, s
    assert run.recovered_after_s is not None, f"{deployment} did not come back: {running_replicas(app, deployment)}"


def test_one_of_two_rankers_killed_under_load(shards_app) -> None:  # type: ignore[no-untyped-def]
    url, _ = shards_app
    run = run_through_kill(url, APP, "Ranker", BODIES, concurrency=CLIENTS)
    _check_no_failure_no_stall(run, APP, "Ranker")


@pytest.mark.timeout(900)
def test_one_of_two_fused_ingress_replicas_killed_behind_haproxy(tmp_path: Path) -> None:
    """Topology `fused` behind HAProxy with the shipped retry policy: its own Ray head (the proxy is
    chosen when Ray starts), via the replica-kill benchmark, one round, a tiny model."""
    out = tmp_path / "kill.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own cluster, not the session's
    env.update(RAY_SERVE_ENABLE_HA_PROXY="1", RAY_SERVE_HAPROXY_RETRY_ON="conn-failure empty-response")
    args = ["--topologies", "fused", "--replicas", "2", "--rounds", "1", "--size", "tiny"]
    args += ["--dataset", "synthetic", "--concurrency", str(CLIENTS), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "benchmark_replica_kill.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert proc.returncode == 0 and out.exists(), f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    cell = json.loads(out.read_text())["cells"]["fused_r2"]
    run = cell["per_round"][0]
    assert run["requests"] > 100, run
    assert run["failed"] == 0, run  # HAProxy resent what the dead replica held
    assert run["worst_ms"] < WORST_MS, run
    assert run["recovered_after_s"] is not None, run
