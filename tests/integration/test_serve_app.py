"""The recommender app on real Ray Serve over real HTTP: endpoints, OpenAPI, hand-written bad-input
cases and schema-driven fuzzing with schemathesis (exact 4xx, never 5xx, healthy afterwards), the API
key, and hot-swapping to a model version with other weights under steady concurrent load on two
Ranker replicas: zero failures, and every response carries the scores of the version it names."""

from __future__ import annotations

import asyncio
import json
import random
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import requests

from lmrec.serving import launch
from support import SERVE_MODEL

pytestmark = pytest.mark.integration


def _args(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "model_uri": f"models:/{SERVE_MODEL}@champion",
        "alias_poll_s": 1.0,
        # limits the OpenAPI document states; with a catalog of about 300 items, any k <= max_k has
        # enough unseen items left after any history <= max_history (what the schema fuzzing relies on)
        "max_k": 50,
        "max_history": 50,
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
    """The split topology with two Ranker replicas (the hot-swap test needs both)."""
    from ray import serve

    tmp = tmp_path_factory.mktemp("serve-app")
    rankers = {"Ranker": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5}}}
    serve.run(launch.build_app(_args(tmp, deployments=rankers)), name="it-main", route_prefix="/main")
    url = f"{serve_http}/main"
    _wait_healthy(url)
    deadline = time.time() + 120
    while serve.status().applications["it-main"].deployments["Ranker"].replica_states.get("RUNNING", 0) < 2:
        assert time.time() < deadline, "the second Ranker replica never started"
        time.sleep(0.5)
    yield url
    serve.delete("it-main")  # later tests share the 2 cores


@pytest.fixture(scope="module")
def dataset(serve_model) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
    """(catalog item ids, known user ids) of the served model's dataset."""
    from lmrec.data.sequences import SequenceData

    seqs = SequenceData.load(serve_model.prepared.path)
    return [int(i) for i in seqs.manifest["item_ids"]], [int(u) for u in seqs.user_ids]


@pytest.fixture(scope="module")
def weights(serve_model, tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """MLflow run id -> model folder: the trained model, and a copy with other weights in a run of its own."""
    from lmrec.models import init_weights_
    from lmrec.models.artifacts import load_model_dir, save_model_dir
    from lmrec.tracking import mlflow_utils as mt

    root = tmp_path_factory.mktemp("swap-models")
    trained = mt.download_model(f"runs:/{serve_model.run_id}/{mt.MODEL_ARTIFACT_PATH}", root / "trained")
    model, vocab, meta = load_model_dir(trained)
    init_weights_(model, 12345)  # same architecture, catalog and dataset; other scores
    other = save_model_dir(root / "other", model.config, model.state_dict(), vocab, meta)
    run = mt.start_run("it-serve", "hot-swap-other-weights", {}, {"kind": "hot-swap-test"})
    logger = mt.RunLogger(run)
    logger.artifacts(other, mt.MODEL_ARTIFACT_PATH)
    logger.end()
    return {serve_model.run_id: trained, run: other}


def _scorer(folder: Path):  # type: ignore[no-untyped-def]
    """The model in `folder`, loaded here as a replica of _args() loads it (CPU, forward auto)."""
    from lmrec.config import from_dict
    from lmrec.serving.config import ServeConfig
    from lmrec.serving.runtime import load_model

    return load_model(str(folder), from_dict(ServeConfig, {"model_uri": str(folder)}))


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

    # Two Ranker replicas: the other one misses at most once, so one of two repeats is a cache hit.
    repeats = [
        requests.post(f"{app_url}/recommend", json={"user_id": user, "k": 5, "explore": False}).json() for _ in range(2)
    ]
    assert any(r["cached"] for r in repeats) and all(r["items"] == body["items"] for r in repeats)

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
    assert schemas["RecommendRequest"]["properties"]["k"]["maximum"] == 50 and schemas["RecommendRequest"]["oneOf"]
    assert spec["servers"] == [{"url": "/main"}]
    docs = requests.get(f"{app_url}/docs")
    assert docs.status_code == 200 and "/main/openapi.json" in docs.text
    assert requests.get(f"{app_url}/redoc").status_code == 200


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


def _expected_status(body: dict[str, Any], catalog: set[int], users: set[int]) -> int:
    """What the app answers a /recommend body (in the order it checks), for bodies whose histories are short."""
    from pydantic import ValidationError

    from lmrec.serving.schemas import RecommendRequest

    try:
        req = RecommendRequest.model_validate_json(json.dumps(body))
    except ValidationError:
        return 422
    if req.k > 50:  # max_k of _args()
        return 422
    if req.history is not None:
        return 200 if set(req.history) <= catalog else 422
    return 200 if req.user_id in users else 404


def test_bad_input_gets_4xx_and_the_app_stays_healthy(app_url: str, dataset) -> None:  # type: ignore[no-untyped-def]
    catalog, users = dataset
    for endpoint, payload, status in FUZZ:
        r = requests.post(f"{app_url}/{endpoint}", data=payload, headers={"content-type": "application/json"})
        assert r.status_code == status, (endpoint, payload[:60], r.status_code, r.text[:300])
        assert "error" in r.json() and r.json()["error"]
    # Answered by the plain-ASGI route (http_fast_path, the default), below the app's route prefix:
    # pydantic reads the body itself, where FastAPI would say "JSON decode error".
    r = requests.post(f"{app_url}/recommend", data=b"{not json", headers={"content-type": "application/json"})
    assert r.json()["detail"][0]["msg"].startswith("Invalid JSON"), r.text
    rng = random.Random(0)
    junk_values = [None, -1, 0, 1.5, "x", [], {}, [None], True, 10**18, "💥", users[0], [catalog[0]]]
    for _ in range(60):  # random structurally-wrong (and a few valid) bodies: the exact status, never 5xx
        body = {
            rng.choice(["user_id", "history", "k", "explore", "exclude_seen", "zzz"]): rng.choice(junk_values)
            for _ in range(rng.randint(0, 4))
        }
        r = requests.post(f"{app_url}/recommend", json=body)
        assert r.status_code == _expected_status(body, set(catalog), set(users)), (body, r.status_code, r.text[:300])
    assert requests.get(f"{app_url}/healthz").status_code == 200
    assert requests.post(f"{app_url}/recommend", json={"history": catalog[:2], "k": 3}).status_code == 200


def test_schema_driven_fuzzing_finds_no_5xx_and_the_schema_holds(app_url: str, dataset) -> None:  # type: ignore[no-untyped-def]
    """schemathesis generates bodies for /recommend and /feedback from the app's own OpenAPI document.

    Schema-valid bodies must be accepted (positive_data_acceptance) and schema-invalid ones rejected
    (negative_data_rejection), with documented statuses and response bodies, never a 5xx. The model's
    catalog, users and served slates are not in the schema (no static schema can hold them), so
    valid bodies are moved into them before they are sent: item ids onto catalog items, user ids
    onto known users, feedback onto a served slate. Then /recommend must answer exactly 200, and
    /feedback 200 the first time and 409 after."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        negative_data_rejection,
        positive_data_acceptance,
        response_schema_conformance,
        status_code_conformance,
    )

    catalog, users = dataset
    slates = [
        requests.post(f"{app_url}/recommend", json={"history": [catalog[i]], "k": 3, "explore": False}).json()
        for i in range(8)
    ]
    schema = schemathesis.openapi.from_url(f"{app_url}/openapi.json")
    common = [not_a_server_error, status_code_conformance, response_schema_conformance]
    rewarded: set[tuple[str, int]] = set()
    seen: dict[tuple[str, str], list[int]] = {}

    def onto_the_model(path: str, body: dict[str, Any]) -> int:
        """Move a valid body's ids into the model's domain; the status it must get."""
        if path == "/recommend":
            if body.get("history"):
                body["history"] = [catalog[i % len(catalog)] for i in body["history"]]
            if isinstance(body.get("user_id"), int):
                body["user_id"] = users[body["user_id"] % len(users)]
            return 200
        slate = slates[zlib.crc32(body["request_id"].encode()) % len(slates)]
        body["request_id"], body["item_id"] = slate["request_id"], slate["items"][body["item_id"] % 3]
        key = (body["request_id"], body["item_id"])
        status = 409 if key in rewarded else 200
        rewarded.add(key)
        return status

    def fuzzer(path: str, mode: GenerationMode, check: Any, examples: int) -> Any:
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=schema[path]["POST"].as_strategy(generation_mode=mode))
        def fuzz(case: Any) -> None:
            want = onto_the_model(path, case.body) if mode == GenerationMode.POSITIVE else None
            response = case.call_and_validate(base_url=app_url, checks=[*common, check], timeout=30)
            seen.setdefault((path, mode.value), []).append(response.status_code)
            if want is not None:
                assert response.status_code == want, (case.body, response.status_code, response.text[:300])

        return fuzz

    for path, examples in (("/recommend", 50), ("/feedback", 25)):
        fuzzer(path, GenerationMode.POSITIVE, positive_data_acceptance, examples)()
        fuzzer(path, GenerationMode.NEGATIVE, negative_data_rejection, examples)()
    for (path, mode), statuses in sorted(seen.items()):
        assert len(statuses) >= 10, (path, mode, len(statuses))
        if mode == "negative":  # rejected as a client error (what negative_data_rejection checked), never 5xx
            assert all(400 <= s < 500 for s in statuses), (path, sorted(set(statuses)))
    assert requests.get(f"{app_url}/healthz").status_code == 200
    assert requests.post(f"{app_url}/recommend", json={"history": catalog[:3], "k": 5}).status_code == 200


def test_api_key_protects_recommend_and_feedback(serve_model, serve_http, dataset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
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
    body = {"history": dataset[0][:3], "k": 3}
    assert requests.post(f"{url}/recommend", json=body).status_code == 401
    assert requests.post(f"{url}/recommend", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    ok = requests.post(f"{url}/recommend", json=body, headers={"X-API-Key": "s3cret-token"})
    assert ok.status_code == 200, ok.text
    bad = requests.post(
        f"{url}/recommend", data=b"{not json", headers={"content-type": "application/json", "X-API-Key": "s3cret-token"}
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["msg"] == "JSON decode error"  # FastAPI's own parser
    assert requests.post(f"{url}/feedback", json={"request_id": "a", "item_id": 1, "reward": 1}).status_code == 401
    serve.delete("it-secured")


def _expected_top_k(folder: Path, user: int, histories: list[list[int]], k: int) -> tuple[list, np.ndarray]:
    """Greedy top-k item ids and scores of `folder`'s model: for `user` (row 0), then for each history."""
    model = _scorer(folder)
    rows = [model.histories.get(user)] + [model.to_idx(h) for h in histories]
    cand, scores = model.rank(rows, k, [True] * len(rows))
    return [model.to_ids(c).tolist() for c in cand], scores


async def _load(url: str, stop: asyncio.Event, seen: list[dict[str, Any]], bodies: list[dict], concurrency: int = 8):  # type: ignore[no-untyped-def]
    """Steady load, each worker cycling through `bodies`; records (time, status, request index, body)."""

    async def worker(session: aiohttp.ClientSession, i: int) -> None:
        n = i
        while not stop.is_set():
            index = n % len(bodies)
            async with session.post(f"{url}/recommend", json=bodies[index]) as r:
                seen.append({"t": time.monotonic(), "status": r.status, "index": index, **(await r.json())})
            n += concurrency

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session, i) for i in range(concurrency)))


def _swap_under_load(url: str, weights: dict[str, Path], dataset) -> None:  # type: ignore[no-untyped-def]
    """Move `champion` to a version with the other weights under steady load: no failures; every
    response labelled with a version carries that version's scores (for a fixed user, served mostly
    from the cache, and for 40 histories that miss it); only the new version once the swap is done."""
    from lmrec.tracking.mlflow_utils import register_model, resolve_model_version, set_alias

    catalog, users = dataset
    current = requests.get(f"{url}/version").json()
    old, old_run = str(current["model_version"]), current["run_id"]
    new_run = next(run for run in weights if run != old_run)
    new_version = register_model(new_run, SERVE_MODEL, tags={"kind": "hot-swap-test"})
    new = f"{SERVE_MODEL}/{new_version}"
    assert old != new and old.startswith(f"{SERVE_MODEL}/")
    rng = random.Random(1)
    histories = [rng.sample(catalog, 3) for _ in range(40)]
    bodies = [{"user_id": users[0], "k": 5, "explore": False}] + [
        {"history": h, "k": 5, "explore": False} for h in histories
    ]
    expected = {old: _expected_top_k(weights[old_run], users[0], histories, 5)}
    expected[new] = _expected_top_k(weights[new_run], users[0], histories, 5)
    assert not np.allclose(expected[old][1][0], expected[new][1][0], atol=1e-3), (
        "the two versions must score differently"
    )
    seen: list[dict[str, Any]] = []

    async def scenario() -> float:
        stop = asyncio.Event()
        load = asyncio.create_task(_load(url, stop, seen, bodies))
        await asyncio.sleep(2.0)
        set_alias(SERVE_MODEL, "champion", new_version)  # replicas poll the alias and swap in the background
        deadline = time.monotonic() + 90
        done_at = None
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            tail = seen[-40:]
            if len(tail) == 40 and all(r.get("model_version") == new for r in tail):
                done_at = time.monotonic()  # 40 responses in a row from the new version: every replica swapped
                break
        await asyncio.sleep(2.0)  # keep loading after the swap
        stop.set()
        await load
        assert done_at is not None, "the alias move was never picked up by every replica"
        return done_at

    done_at = asyncio.run(scenario())
    failed = [r for r in seen if r["status"] != 200]
    assert not failed, f"{len(failed)} failed requests during the swap: {failed[:3]}"
    labels = {r["model_version"] for r in seen}
    assert labels == {old, new}, labels
    for r in seen:  # each response carries the scores of the version it names
        items, scores = expected[r["model_version"]]
        np.testing.assert_allclose(r["scores"], scores[r["index"]], rtol=1e-4, atol=1e-4, err_msg=str(r))
        assert r["items"] == items[r["index"]], r
    fixed_user = {r["model_version"] for r in seen if r["index"] == 0}
    assert fixed_user == {old, new}, f"the fixed user was served by {fixed_user} only"
    after = [r["model_version"] for r in seen if r["t"] > done_at]
    assert after and set(after) == {new}, "responses after the swap must come from the new version only"
    assert len(seen) > 50
    assert str(resolve_model_version(f"models:/{SERVE_MODEL}@champion")["version"]) == str(new_version)


def test_hot_swap_on_two_rankers_serves_each_version_s_own_scores(app_url: str, serve_model, weights, dataset) -> None:  # type: ignore[no-untyped-def]
    assert requests.get(f"{app_url}/version").json()["model_version"] == f"{SERVE_MODEL}/{serve_model.model_version}"
    _swap_under_load(app_url, weights, dataset)


def test_fused_topology_ranks_in_the_ingress_logs_feedback_and_hot_swaps(
    serve_model, serve_http, weights, dataset, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
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
        assert version["run_id"] in weights and version["num_items"] > 10  # champion: whichever swap ran last
        _swap_under_load(url, weights, dataset)
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
