"""Serving survives process deaths under steady load (real Serve, real HTTP, SIGKILL).

* One of two Ranker replicas is killed (topology `split`): no request fails (the Ingress retries
  on the surviving replica), none waits for the replacement to load its model, and the replica
  count recovers.
* One of two Ingress replicas of topology `fused` (the Ingress holds the model) is killed: no request
  is slow and the replica comes back, but the requests that replica had accepted fail (Serve's proxy
  answers 500 for a request whose replica died after taking it; it does not resend a POST). Every
  failure is such a request: none that started after the kill fails. That is why `split` is the
  topology that loses no request to a replica's death (docs/serving.md).
* The FeedbackLog replica is killed: every feedback answered 2xx is in the Parquet log afterwards,
  and feedback is acknowledged again once the restarted replica is up.

The worst latency through a kill with one and with two replicas is measured by
jobs/benchmark_replica_kill.py (docs/benchmarks.md); here it is held to a bound.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from lmrec.benchmarks.replica_kill import replica_pids, run_through_kill, running_replicas
from lmrec.serving import launch
from support import SERVE_MODEL

pytestmark = pytest.mark.integration
SPLIT, FUSED = "it-faults", "it-faults-fused"
CLIENTS = 8
# A request caught by the kill is retried on the surviving replica: it waits for a retry, not for
# a replacement to start and load the model (that stall is what a single replica costs: tens of s).
WORST_MS = 5000.0
BODIES = [{"history": [1 + i % 7, 2 + i % 5, 3], "k": 3} for i in range(35)]


def _deploy(app: str, route: str, serve_http: str, args: dict, deployment: str) -> str:
    from ray import serve

    serve.run(launch.build_app(args), name=app, route_prefix=route)
    url = f"{serve_http}{route}"
    deadline = time.time() + 180
    while requests.get(f"{url}/healthz", timeout=10).status_code != 200 or running_replicas(app, deployment) < 2:
        assert time.time() < deadline, f"{app} never became healthy with 2 {deployment} replicas"
        time.sleep(0.5)
    return url


def _args(log_dir: Path, topology: str) -> dict:
    model_deployment = "Ranker" if topology == "split" else "Ingress"
    return {
        "model_uri": f"models:/{SERVE_MODEL}@champion",
        "topology": topology,
        "alias_poll_s": 0,
        "cache": {"enabled": False},  # every request reaches a model replica
        "feedback": {"log_dir": str(log_dir), "commit_interval_s": 0.01, "max_delay_s": 0.2, "batch_size": 16},
        "exploration": {"policy": {"type": "epsilon_greedy", "epsilon": 0.1}, "num_candidates": 30},
        "deployments": {model_deployment: {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5}}},
    }


@pytest.fixture(scope="module")
def faults_app(serve_model, serve_http, tmp_path_factory) -> tuple[str, Path]:
    from ray import serve

    log_dir = tmp_path_factory.mktemp("faults") / "feedback"
    yield _deploy(SPLIT, "/faults", serve_http, _args(log_dir, "split"), "Ranker"), log_dir
    serve.delete(SPLIT)


def _check_no_failure_no_stall(run, app: str, deployment: str) -> None:  # type: ignore[no-untyped-def]
    s = run.summary()
    assert s["requests"] > 100, s
    assert s["failed"] == 0, s
    assert s["worst_ms"] < WORST_MS, s
    assert run.recovered_after_s is not None, f"{deployment} did not come back: {running_replicas(app, deployment)}"


def test_one_of_two_rankers_killed_under_load(faults_app) -> None:  # type: ignore[no-untyped-def]
    url, _ = faults_app
    run = run_through_kill(url, SPLIT, "Ranker", BODIES, concurrency=CLIENTS)
    _check_no_failure_no_stall(run, SPLIT, "Ranker")


def test_one_of_two_fused_ingress_replicas_killed_under_load(serve_model, serve_http, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ray import serve

    url = _deploy(FUSED, "/faults-fused", serve_http, _args(tmp_path / "feedback", "fused"), "Ingress")
    try:
        run = run_through_kill(url, FUSED, "Ingress", BODIES, concurrency=CLIENTS)
        s = run.summary()
        assert s["requests"] > 100, s
        # at most the requests in flight at the kill fail (each client has one), and only those
        assert s["failed"] == s["failed_started_before_kill"] <= CLIENTS, s
        assert set(s["statuses"]) <= {"200", "500", "-1"}, s
        assert s["worst_ms"] < WORST_MS, s
        assert run.recovered_after_s is not None, f"Ingress did not come back: {running_replicas(FUSED, 'Ingress')}"
    finally:
        serve.delete(FUSED)


def test_feedback_log_killed_under_load_keeps_every_acknowledged_record(faults_app) -> None:  # type: ignore[no-untyped-def]
    url, log_dir = faults_app
    assert len(replica_pids(SPLIT, "FeedbackLog")) == 1
    run = run_through_kill(url, SPLIT, "FeedbackLog", BODIES, concurrency=6, feedback=True, after_s=4.0)
    assert run.recovered_after_s is not None, "the FeedbackLog replica did not come back"
    acked = {(rid, item) for rid, item, status in run.acks if status == 200}
    assert len(acked) > 50
    written = set()
    for f in (log_dir / "feedback").rglob("*.parquet"):
        t = pq.read_table(f, columns=["request_id", "item_id"])
        written |= set(zip(t.column("request_id").to_pylist(), t.column("item_id").to_pylist()))
    missing = acked - written
    assert not missing, f"{len(missing)} acknowledged feedback records are not in the log"
    # the log works again after the restart: the last feedback calls were acknowledged
    tail = [status for _, _, status in run.acks[-20:]]
    assert tail.count(200) >= 15, tail
    assert all(0 < s < 500 or s == 503 for _, _, s in run.acks), sorted({s for _, _, s in run.acks})
    assert run.failed == 0, run.summary()  # ranking never depended on the log
