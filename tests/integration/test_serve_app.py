"""The recommender app on real Ray Serve over real HTTP: endpoints, OpenAPI, bad-input
fuzzing (4xx, never 5xx, healthy afterwards), the API key, feedback durability,
and hot-swapping model versions under steady concurrent load with zero failures."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from lmrec.serving import launch
from support import SERVE_MODEL

pytestmark = pytest.mark.integration


def _args(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model_uri": f"models:/{SERVE_MODEL}@champion",
        "alias_poll_s": 1.0,
        "feedback": {"log_dir": str(tmp / "feedback"), "commit_interval_s": 0.01},
        "exploration": {
            "policy": {"type": "epsilon_greedy", "epsilon": 0.2},
            "num_candidates": 50,
            "stats_sync_s": 0.5,
        },
        **extra,
    }


def _wait_healthy(url: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = requests.get(f"{url}/healthz", timeout=5)
        if r.status_code == 200:
            return r.json()
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy: {r.status_code} {r.text}")


@pytest.fixture(scope="module")
def app_url(serve_model, serve_http, tmp_path_factory):  # type: ignore[no-untyped-def]
    from ray import serve

    tmp = tmp_path_factory.mktemp("serve-app")
    serve.run(launch.build_app(_args(tmp)), name="it-main", route_prefix="/main")
    url = f"{serve_http}/main"
    _wait_healthy(url)
    yield url
    serve.delete("it-main")  # later tests share the 2 cores


def test_recommend_feedback_version_and_openapi(app_url: str, serve_model) -> None:
    version = requests.get(f"{app_url}/version").json()
    assert version["model_version"] == f"{SERVE_MODEL}/{serve_model.model_version}"
    assert version["run_id"] == serve_model.run_id and version["num_items"] > 10
    assert version["device"] == "cpu" and version["forward"] == "torchscript"  # forward: auto on CPU
    assert version["last_position_only"] is True

    data = serve_model.prepared
    from lmrec.data.sequences import SequenceData

    seqs = SequenceData.load(data.path)
    user = int(seqs.user_ids[0])
    r = requests.post(f"{app_url}/recommend", json={"user_id": user, "k": 5, "explore": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 5 and body["propensities"] == [1.0] * 5 and body["policy"] == "greedy"
    assert body["scores"] == sorted(body["scores"], reverse=True)
    seen = set(seqs.manifest["item_ids"][i - 1] for i in seqs.sequence(0))
    assert not seen & set(body["items"])  # exclude_seen defaults to true

    again = requests.post(f"{app_url}/recommend", json={"user_id": user, "k": 5, "explore": False}).json()
    assert again["cached"] and again["items"] == body["items"]

    explored = [requests.post(f"{app_url}/recommend", json={"user_id": user, "k": 5}).json() for _ in range(30)]
    assert all(e["policy"] == "epsilon_greedy" and len(e["items"]) == 5 for e in explored)
    assert all(0 < p <= 1 for e in explored for p in e["propensities"])
    assert any(e["explored"] for e in explored)  # epsilon 0.2 over 30 slates

    fb = requests.post(
        f"{app_url}/feedback", json={"request_id": body["request_id"], "item_id": body["items"][0], "reward": 1}
    )
    assert fb.status_code == 200, fb.text
    assert fb.json()["position"] == 0 and fb.json()["propensity"] == 1.0

    spec = requests.get(f"{app_url}/openapi.json").json()
    assert {"/recommend", "/feedback", "/healthz", "/version"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert schemas["RecommendRequest"].get("examples"), "request examples are published"


FUZZ = [
    ("recommend", b"{not json", 422),
    ("recommend", b"[]", 422),
    ("recommend", json.dumps({"k": 5}).encode(), 422),
    ("recommend", json.dumps({"user_id": "1", "k": 5}).encode(), 422),
    ("recommend", json.dumps({"user_id": 1.5, "k": 5}).encode(), 422),
    ("recommend", json.dumps({"user_id": 10**9, "k": 5}).encode(), 404),
    ("recommend", json.dumps({"history": [], "k": 5}).encode(), 422),
    ("recommend", json.dumps({"history": [10**9], "k": 5}).encode(), 422),
    ("recommend", json.dumps({"history": [1] * 10_000, "k": 5}).encode(), 422),
    ("recommend", json.dumps({"history": [1], "k": 0}).encode(), 422),
    ("recommend", json.dumps({"history": [1], "k": -3}).encode(), 422),
    ("recommend", json.dumps({"history": [1], "k": 10**6}).encode(), 422),
    ("recommend", json.dumps({"history": [1], "k": "ten"}).encode(), 422),
    ("recommend", json.dumps({"history": [1], "k": 5, "explore": "yes"}).encode(), 422),
    ("recommend", json.dumps({"history": [1], "k": 5, "bogus": 1}).encode(), 422),
    ("feedback", json.dumps({"request_id": "does-not-exist", "item_id": 1, "reward": 1}).encode(), 404),
    ("feedback", json.dumps({"request_id": "x", "item_id": 1, "reward": 7}).encode(), 422),
    ("feedback", json.dumps({"request_id": "", "item_id": 1, "reward": 1}).encode(), 422),
    ("feedback", b"\xff\xfe garbage", 422),
]


def test_bad_input_gets_4xx_and_the_app_stays_healthy(app_url: str) -> None:
    for endpoint, payload, status in FUZZ:
        r = requests.post(f"{app_url}/{endpoint}", data=payload, headers={"content-type": "application/json"})
        assert r.status_code == status, (endpoint, payload[:60], r.status_code, r.text[:300])
        assert "error" in r.json() and r.json()["error"]
    # Answered by the plain-ASGI route (http_fast_path, the default), below the app's route prefix:
    # pydantic reads the body itself, where FastAPI would say "JSON decode error".
    r = requests.post(f"{app_url}/recommend", data=b"{not json", headers={"content-type": "application/json"})
    assert r.json()["detail"][0]["msg"].startswith("Invalid JSON"), r.text
    rng = random.Random(0)
    junk_values = [None, -1, 0, 1.5, "x", [], {}, [None], True, 10**18, "💥"]
    for _ in range(60):  # random structurally-wrong bodies: any 4xx, never 5xx
        body = {
            rng.choice(["user_id", "history", "k", "explore", "exclude_seen", "zzz"]): rng.choice(junk_values)
            for _ in range(rng.randint(0, 4))
        }
        r = requests.post(f"{app_url}/recommend", json=body)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text[:300])
    assert requests.get(f"{app_url}/healthz").status_code == 200
    assert requests.post(f"{app_url}/recommend", json={"history": [1, 2], "k": 3}).status_code in (200, 422)


def test_api_key_protects_recommend_and_feedback(serve_model, serve_http, tmp_path: Path) -> None:
    from ray import serve

    key_file = tmp_path / "key"
    key_file.write_text("s3cret-token\n")
    # This app serves /recommend through its FastAPI route (the fast path is off), so both routes
    # check the key: the main app's fuzz test runs on the fast path.
    serve.run(
        launch.build_app(_args(tmp_path, api_key_file=str(key_file), http_fast_path=False)),
        name="it-secured",
        route_prefix="/secured",
    )
    url = f"{serve_http}/secured"
    _wait_healthy(url)
    body = {"history": [1, 2, 3], "k": 3}
    assert requests.post(f"{url}/recommend", json=body).status_code == 401
    assert requests.post(f"{url}/recommend", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    ok = requests.post(f"{url}/recommend", json=body, headers={"X-API-Key": "s3cret-token"})
    assert ok.status_code in (200, 422), ok.text  # 422 only if items 1..3 are not in the catalog
    bad = requests.post(
        f"{url}/recommend", data=b"{not json", headers={"content-type": "application/json", "X-API-Key": "s3cret-token"}
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["msg"] == "JSON decode error"  # FastAPI's own parser
    assert requests.post(f"{url}/feedback", json={"request_id": "a", "item_id": 1, "reward": 1}).status_code == 401
    serve.delete("it-secured")


async def _load(url: str, stop: asyncio.Event, seen: list[tuple[float, int, str]], concurrency: int = 8) -> None:
    async def worker(session: aiohttp.ClientSession, i: int) -> None:
        while not stop.is_set():
            async with session.post(f"{url}/recommend", json={"history": [1 + (i % 5), 2, 3], "k": 5}) as r:
                body = await r.json()
                seen.append((time.monotonic(), r.status, body.get("model_version", body.get("error", ""))))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session, i) for i in range(concurrency)))


def _swap_under_load(url: str, serve_model) -> None:  # type: ignore[no-untyped-def]
    """Move `champion` to a new version under steady load: no failures, and only the new version after."""
    from lmrec.tracking.mlflow_utils import register_model, resolve_model_version, set_alias

    old = str(requests.get(f"{url}/version").json()["model_version"])
    new_version = register_model(serve_model.run_id, SERVE_MODEL, tags={"kind": "hot-swap-test"})
    new = f"{SERVE_MODEL}/{new_version}"
    assert old != new and old.startswith(f"{SERVE_MODEL}/")
    seen: list[tuple[float, int, str]] = []

    async def scenario() -> float:
        stop = asyncio.Event()
        load = asyncio.create_task(_load(url, stop, seen))
        await asyncio.sleep(2.0)
        set_alias(SERVE_MODEL, "champion", new_version)  # replicas poll the alias and swap in the background
        deadline = time.monotonic() + 60
        swapped_at = None
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            if seen and seen[-1][2] == new:
                swapped_at = time.monotonic()
                break
        await asyncio.sleep(2.0)  # keep loading after the swap
        stop.set()
        await load
        assert swapped_at is not None, "the alias move was never picked up"
        return swapped_at

    swapped_at = asyncio.run(scenario())
    statuses = {s for _, s, _ in seen}
    assert statuses == {200}, f"failed requests during the swap: { {s for s in statuses if s != 200} }"
    versions = [v for _, _, v in seen]
    assert old in versions and new in versions
    after = [v for t, _, v in seen if t > swapped_at + 0.5]
    assert after and set(after) == {new}, "responses after the swap must come from the new version only"
    assert len(seen) > 50
    assert str(resolve_model_version(f"models:/{SERVE_MODEL}@champion")["version"]) == str(new_version)


def test_hot_swap_under_load_drops_nothing(app_url: str, serve_model) -> None:
    assert requests.get(f"{app_url}/version").json()["model_version"] == f"{SERVE_MODEL}/{serve_model.model_version}"
    _swap_under_load(app_url, serve_model)


def test_fused_topology_ranks_in_the_ingress_logs_feedback_and_hot_swaps(
    serve_model, serve_http, tmp_path: Path
) -> None:
    """topology=fused: no Ranker deployment; the Ingress replica holds the model and does the same job."""
    from ray import serve

    serve.run(launch.build_app(_args(tmp_path, topology="fused")), name="it-fused", route_prefix="/fused")
    url = f"{serve_http}/fused"
    try:
        _wait_healthy(url)
        deployments = set(serve.status().applications["it-fused"].deployments)
        assert deployments == {"Ingress", "FeedbackLog"}, deployments
        body = {"history": [1, 2, 3], "k": 5, "explore": False}
        first = requests.post(f"{url}/recommend", json=body)
        assert first.status_code == 200, first.text
        first = first.json()
        assert len(first["items"]) == 5 and first["policy"] == "greedy" and not first["cached"]
        assert requests.post(f"{url}/recommend", json=body).json()["cached"]
        explored = [requests.post(f"{url}/recommend", json={**body, "explore": True}).json() for _ in range(30)]
        assert any(e["explored"] for e in explored) and all(0 < p <= 1 for e in explored for p in e["propensities"])
        fb = requests.post(
            f"{url}/feedback", json={"request_id": first["request_id"], "item_id": first["items"][1], "reward": 1}
        )
        assert fb.status_code == 200 and fb.json()["position"] == 1, fb.text
        for endpoint, payload, status in FUZZ:  # same 4xx contract as the split topology
            r = requests.post(f"{url}/{endpoint}", data=payload, headers={"content-type": "application/json"})
            assert r.status_code == status, (endpoint, payload[:60], r.status_code, r.text[:300])
        version = requests.get(f"{url}/version").json()
        assert version["run_id"] == serve_model.run_id and version["num_items"] > 10
        _swap_under_load(url, serve_model)
    finally:
        serve.delete("it-fused")


def test_serving_benchmark_forward_and_peer_run_where_the_replicas_do(serve_model) -> None:
    """benchmark_serve's raw forward and peer take the replicas' device explicitly, never torch's "auto" pick."""
    from lmrec.benchmarks.serve_model import model_device, raw_ceiling, request_bodies
    from lmrec.benchmarks.serve_peer import make_app
    from lmrec.data.sequences import SequenceData

    assert (model_device(0), model_device(0.5), model_device(1)) == ("cpu", "cuda", "cuda")
    uri = f"models:/{SERVE_MODEL}@champion"
    bodies = request_bodies(SequenceData.load(serve_model.prepared.path), 8, 5)
    out = raw_ceiling(uri, bodies, batch=4, threads=1, device=model_device(0), repeats=2)  # type: ignore[arg-type]
    assert out["device"] == "cpu" and out["batch_4"]["req_per_s"] > 0 and out["batch_1"]["req_per_s"] > 0
    from fastapi.testclient import TestClient

    with TestClient(make_app(uri, 4, 0.005, 1, device=model_device(0))) as client:
        r = client.post("/recommend", json=bodies[0])
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 5
