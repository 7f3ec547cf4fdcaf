"""The exploration loop on real services: the serving app explores with a policy it loads from
the MLflow registry by alias (and follows when the alias moves), logs slates and clicks, and an
exploration search reads exactly those logs through Ray Data, joins the clicks and scores
policies by off-policy evaluation."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import pytest
import requests

from lmrec.serving import launch
from support import SERVE_MODEL

# Ray Data reads these small logs with one footer reader (see the fixture).
pytestmark = pytest.mark.integration

POLICY_MODEL = "it-loop-policy"
N_REQUESTS = 120


def _register_policy(config: dict, alias: str) -> str:
    """Save `config` as a search would (policy/policy.json in a run) and point `alias` at it."""
    from lmrec.exploration.artifacts import POLICY_ARTIFACT_DIR, save_policy_artifact
    from lmrec.tracking import mlflow_utils as mt

    run = mt.start_run("it-exploration-loop", f"policy-{config['type']}", {}, {"lmrec.kind": "exploration_search"})
    save_policy_artifact(run, config, {"scenario": "test"})
    mt.RunLogger(run).end()
    return mt.register_model(
        run, POLICY_MODEL, alias=alias, artifact_path=POLICY_ARTIFACT_DIR, model_description="lmrec exploration policy"
    )


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(what)


def test_served_logs_feed_the_exploration_search(serve_model, serve_http, mlflow_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient
    from ray import serve

    from lmrec.config import load_config
    from lmrec.tuning.exploration import TuneExplorationConfig, run_exploration_search

    v1 = _register_policy({"type": "thompson", "prior_strength": 20.0, "slate_size": 4}, "live")
    log_dir = tmp_path / "logs"
    args = {
        "model_uri": f"models:/{SERVE_MODEL}@champion",
        "topology": "fused",
        "alias_poll_s": 1.0,
        "feedback": {"log_dir": str(log_dir), "commit_interval_s": 0.01, "max_delay_s": 0.2, "batch_size": 64},
        "exploration": {
            "policy": {"type": "epsilon_greedy", "epsilon": 0.1},
            "policy_uri": f"models:/{POLICY_MODEL}@live",
            "num_candidates": 20,
            "stats_sync_s": 0.5,
        },
    }
    serve.run(launch.build_app(args), name="it-loop", route_prefix="/loop")
    url = f"{serve_http}/loop"
    try:
        _wait(lambda: requests.get(f"{url}/healthz", timeout=5).status_code == 200, 120, "app not healthy")
        version = requests.get(f"{url}/version").json()
        assert version["policy"]["type"] == "thompson" and version["policy"]["prior_strength"] == 20.0
        assert version["policy_uri"] == f"models:/{POLICY_MODEL}@live" and version["policy_version"] == v1
        assert version["policy_error"] is None

        from lmrec.data.sequences import SequenceData

        catalog = [int(i) for i in SequenceData.load(serve_model.prepared.path).manifest["item_ids"]]
        rng = random.Random(0)
        served, clicks = [], 0
        for _i in range(N_REQUESTS):
            history = rng.sample(catalog[:60], 4)
            r = requests.post(f"{url}/recommend", json={"history": history, "k": 4})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["policy"] == "thompson" and len(body["items"]) == 4
            served.append(body["request_id"])
            if rng.random() < 0.3:  # a click on one shown item, acknowledged only once durable
                item = body["items"][rng.randrange(4)]
                fb = requests.post(
                    f"{url}/feedback", json={"request_id": body["request_id"], "item_id": item, "reward": 1}
                )
                assert fb.status_code == 200, fb.text
                clicks += 1
        assert clicks > 15

        # every served slate reaches the impression log
        ingress = serve.get_deployment_handle("Ingress", "it-loop")
        log_handle = serve.get_deployment_handle("FeedbackLog", "it-loop")

        def all_logged() -> bool:
            ingress.flush.remote().result(timeout_s=30)
            return log_handle.flush.remote().result(timeout_s=30)["impressions_logged"] >= N_REQUESTS

        _wait(all_logged, 60, "impressions were not all logged")

        # moving the policy alias swaps the serving policy without a redeploy
        v2 = _register_policy({"type": "epsilon_greedy", "epsilon": 0.3, "slate_size": 4}, "live")
        swapped = _wait(
            lambda: (v := requests.get(f"{url}/version").json())["policy_version"] == v2 and v,
            30,
            "the policy alias move was never picked up",
        )
        assert swapped["policy"]["type"] == "epsilon_greedy" and swapped["policy"]["epsilon"] == 0.3
        after = requests.post(f"{url}/recommend", json={"history": catalog[:3], "k": 4}).json()
        assert after["policy"] == "epsilon_greedy"
    finally:
        serve.delete("it-loop")

    # the search reads the serving app's folder: slates from impressions/, clicks from feedback/
    with tempfile.TemporaryDirectory() as storage:
        cfg = load_config(
            TuneExplorationConfig,
            None,
            [
                "scenario=logs",
                f"logs.path={log_dir}",
                "logs.attribution_window_s=0",
                "logs.warm_start_frac=0.5",
                "logs.n_bootstrap=50",
                "logs.n_sim=100",
                "logs.l2=1.0",
                "search.num_samples=4",
                "search.max_concurrent=2",
                "search.eval_repeats=1",
                f"search.storage_path={storage}",
                "tracking.experiment=it-exploration-loop",
                "tracking.register=false",
            ],
        )
        result = run_exploration_search(cfg)
    info = result.scenario_info
    assert info["impressions"] == N_REQUESTS + 1 and info["too_recent"] == 0  # + the request after the swap
    assert info["feedback_events"] == clicks and info["events_joined"] == clicks and info["events_without_slate"] == 0
    assert info["clicks_joined"] == clicks
    assert info["warm_start_requests"] + info["scored_requests"] == N_REQUESTS + 1
    assert "search_space_note" not in info  # warm-started: UCB has statistics and stays in the space
    assert len(result.trials) == 4 and all("metrics" in t for t in result.trials)
    client = MlflowClient(mlflow_server.uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and "lmrec.policy_alias" not in parent.data.tags  # nothing registered

    # slates served within the attribution window are left out, not counted as unclicked
    from lmrec.tuning.feedback_io import read_served_logs

    table, recent = read_served_logs(log_dir, attribution_window_s=3600)
    assert table.num_rows == 0 and recent["too_recent"] == N_REQUESTS + 1
