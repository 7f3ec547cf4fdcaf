"""A fused model's catalog growing while it serves, over real HTTP on real Ray Serve with two Ranker
replicas: POST /catalog/items behind the API key, bad updates answered 4xx with /version's catalog
unchanged, and a new item of cluster k (known by its attribute alone) ranked into the slates of a
cluster-k history on every replica within seconds, and far down for another cluster's history."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import requests

from lmrec.serving import launch

pytestmark = pytest.mark.integration

FUSED_MODEL = "it-serve-fused"
KEY = {"X-API-Key": "catalog-token"}


@pytest.fixture(scope="module")
def fused_model(synthetic_prepared, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """A small fused (gate, attributes) model trained in-process on the session's synthetic data and
    registered as FUSED_MODEL@champion (in-process: a second Ray Train run would cost more than it tests)."""
    from lmrec.config import load_config
    from lmrec.tracking import mlflow_utils as mt
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.context import LocalContext
    from lmrec.training.loop import run_training
    from lmrec.training.steps import EXPORT_DIR

    _, prepared = synthetic_prepared
    cfg = load_config(
        TrainJobConfig,
        None,
        [
            "train.strategy=none",
            "train.epochs=2",
            "train.batch_size=32",
            "train.lr=0.003",
            "eval.protocols=[full]",
            "eval.every_epochs=0",
            "eval.max_users=50",
            "train.log_every_steps=1000",
            "model.content.fusion=gate",
            "model.content.attributes=true",
            "model.content.id_dropout=0.3",
        ],
    )
    cfg.prepared_path = str(prepared.path)
    root = tmp_path_factory.mktemp("fused-train")
    t0 = time.perf_counter()
    run_training(cfg, LocalContext(root))
    print(f"\nfused model trained in-process in {time.perf_counter() - t0:.1f} s")
    run = mt.start_run("it-serve", "fused-catalog", {}, {"kind": "catalog-test"})
    logger = mt.RunLogger(run)
    logger.artifacts(next(root.rglob(EXPORT_DIR)), mt.MODEL_ARTIFACT_PATH)
    logger.end()
    mt.register_model(run, FUSED_MODEL, alias="champion")
    return f"models:/{FUSED_MODEL}@champion"


@pytest.fixture(scope="module")
def catalog_url(fused_model, serve_http, tmp_path_factory):  # type: ignore[no-untyped-def]
    from ray import serve

    tmp = tmp_path_factory.mktemp("serve-catalog")
    (tmp / "key").write_text(KEY["X-API-Key"])
    args: dict[str, Any] = {
        "model_uri": fused_model,
        "alias_poll_s": 0,
        "api_key_file": str(tmp / "key"),
        "catalog": {"dir": str(tmp / "catalogs"), "poll_s": 0.25},
        "feedback": {"log_dir": str(tmp / "feedback")},
        "exploration": {"num_candidates": 50},
        "deployments": {"Ranker": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5}}},
    }
    t0 = time.perf_counter()
    serve.run(launch.build_app(args), name="it-catalog", route_prefix="/catalog-app")
    url = f"{serve_http}/catalog-app"
    deadline = time.time() + 180
    while serve.status().applications["it-catalog"].deployments["Ranker"].replica_states.get("RUNNING", 0) < 2:
        assert time.time() < deadline, "the Ranker replicas never started"
        time.sleep(0.5)
    while requests.get(f"{url}/healthz", timeout=5).status_code != 200:
        assert time.time() < deadline, "the app never became healthy"
        time.sleep(0.5)
    print(f"catalog app deployed with two Ranker replicas in {time.perf_counter() - t0:.1f} s")
    yield url
    serve.delete("it-catalog")


def _slate(url: str, history: list[int], k: int) -> list[int]:
    r = requests.post(f"{url}/recommend", json={"history": history, "k": k, "explore": False}, headers=KEY, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_a_new_item_joins_every_replica_s_catalog_and_its_cluster_s_slates(
    catalog_url: str, synthetic_prepared
) -> None:  # type: ignore[no-untyped-def]
    from lmrec.data.sequences import SequenceData
    from lmrec.data.synthetic import _World

    url = catalog_url
    data_cfg, prepared = synthetic_prepared
    catalog = {int(i) for i in SequenceData.load(prepared.path).manifest["item_ids"]}
    cluster_of = _World(data_cfg.synthetic).cluster_of  # synthetic item i + 1 is in cluster_of[i]
    members = {
        int(c): [int(i) + 1 for i in np.flatnonzero(cluster_of == c) if i + 1 in catalog] for c in set(cluster_of)
    }
    k, other = 3, 7
    version = requests.get(f"{url}/version").json()
    assert version["catalog_version"] == 0 and version["catalog_items"] == 0
    n_items = version["num_items"]

    new = {"item_id": 900_001, "text": None, "attributes": [f"cluster:{k}"]}
    assert requests.post(f"{url}/catalog/items", json={"items": [new]}).status_code == 401  # no key
    bad = [
        ({"items": []}, 422),
        ({"items": [{**new, "attributes": ["cluster:99"]}]}, 422),  # not in the model's vocabulary
        ({"items": [new, new]}, 422),  # twice in one request
        ({"items": [{**new, "item_id": members[k][0]}]}, 409),  # in the model's catalog already
        ({"items": [{"item_id": 900_002, "text": "a red shoe"}]}, 422),  # no content this model uses
        ({"items": [{"item_id": "x"}]}, 422),
    ]
    for body, status in bad:
        r = requests.post(f"{url}/catalog/items", json=body, headers=KEY, timeout=30)
        assert r.status_code == status and r.json()["error"], (body, r.status_code, r.text)
    after_bad = requests.get(f"{url}/version").json()
    assert (after_bad["catalog_version"], after_bad["num_items"]) == (0, n_items)

    t0 = time.perf_counter()
    r = requests.post(f"{url}/catalog/items", json={"items": [new]}, headers=KEY, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["catalog_version"] == 1 and body["added"] == 1 and body["num_items"] == n_items + 1
    history = members[k][:8]
    # rankable on both replicas: 12 requests in a row (routed to either) all rank it in the top 10
    in_a_row, deadline = 0, time.time() + 30
    while in_a_row < 12:
        assert time.time() < deadline, "the new item never reached every replica's slates"
        in_a_row = in_a_row + 1 if new["item_id"] in _slate(url, history, 10) else 0
    print(
        f"\ncatalog update: {body['applied_s']:.2f} s to rankable on the replica that took it, "
        f"{time.perf_counter() - t0:.2f} s from POST to 12 slates in a row from both replicas"
    )
    assert new["item_id"] not in _slate(url, members[other][:8], 30)  # far down for another cluster
    assert len(_slate(url, [new["item_id"], *history[:3]], 5)) == 5  # a history may hold the new item
    version = requests.get(f"{url}/version").json()
    assert (version["catalog_version"], version["catalog_items"], version["num_items"]) == (1, 1, n_items + 1)
    again = requests.post(f"{url}/catalog/items", json={"items": [new]}, headers=KEY, timeout=30)
    assert again.status_code == 409 and requests.get(f"{url}/version").json()["catalog_version"] == 1
