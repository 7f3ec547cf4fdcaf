"""lmrec's custom metrics reach Ray's Prometheus endpoint (what the dashboard's metrics view
and docs/grafana/lmrec_dashboard.json read): training gauges from a Ray Train run, and the
serving metrics of a live app after recommend + feedback traffic. The test scrapes the head's
`--metrics-export-port` over HTTP while the work runs."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import requests

from lmrec.serving import launch
from support import SERVE_MODEL

pytestmark = pytest.mark.integration

TRAIN = [
    "lmrec_train_loss",
    "lmrec_train_samples_per_s",
    "lmrec_train_global_step",
    "lmrec_train_valid_full_ndcg_10",
    "lmrec_train_final_test_full_ndcg_10",
]
SERVE = [
    "lmrec_serve_request_latency_ms_bucket",
    "lmrec_serve_batch_size_bucket",
    "lmrec_serve_forward_ms_bucket",
    "lmrec_serve_cache_requests_total",
    "lmrec_serve_cache_hit_ratio",
    "lmrec_serve_slates_total",
    "lmrec_serve_exploration_rate",
    "lmrec_serve_model_version",
    "lmrec_serve_click_through_rate",
    "lmrec_serve_feedback_total",
]


def _names(text: str) -> set[str]:
    """Metric names in a Prometheus text exposition, without Ray's `ray_` prefix."""
    names = set()
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", line)
        if m:
            names.add(m.group(1).removeprefix("ray_"))
    return names


class Scraper(threading.Thread):
    """Scrapes the endpoint every second and keeps the union of names and the last samples."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.seen, self.text, self.stop = url, set(), "", threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.text = requests.get(self.url, timeout=5).text
                self.seen |= _names(self.text)
            except requests.RequestException:
                pass
            self.stop.wait(1.0)

    def wait_for(self, wanted: list[str], timeout: float) -> list[str]:
        deadline = time.time() + timeout
        while time.time() < deadline and set(wanted) - self.seen:
            time.sleep(1.0)
        return sorted(set(wanted) - self.seen)


def test_train_and_serve_metrics_are_on_the_prometheus_endpoint(
    ray_cluster,
    synthetic_prepared,
    serve_model,
    serve_http,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    from ray import serve

    from lmrec.config import load_config
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.trainer import run_train_job

    scraper = Scraper(f"http://127.0.0.1:{ray_cluster.metrics_port}/metrics")
    scraper.start()
    try:
        data_cfg, _ = synthetic_prepared
        job = load_config(
            TrainJobConfig,
            None,
            [
                "train.epochs=1",  # one epoch publishes every training gauge (loss, validation, final test)
                "train.num_workers=1",
                "train.strategy=none",
                "train.batch_size=32",
                "train.log_every_steps=5",
                "eval.protocols=[full]",
                "eval.every_epochs=1",
                "eval.max_users=100",
                "tracking.experiment=it-metrics",
                "tracking.register=false",
                f"train.storage_path={tmp_path / 'storage'}",
            ],
        )
        job.data = data_cfg
        run_train_job(job)
        missing = scraper.wait_for(TRAIN, timeout=60)
        assert not missing, f"training metrics not exported: {missing}"

        args = {
            "model_uri": f"models:/{SERVE_MODEL}@champion",
            "alias_poll_s": 0,
            "feedback": {"log_dir": str(tmp_path / "fb"), "commit_interval_s": 0.01},
        }
        serve.run(launch.build_app(args), name="it-metrics", route_prefix="/metrics-app")
        url = f"{serve_http}/metrics-app"
        deadline = time.time() + 120
        while requests.get(f"{url}/healthz", timeout=10).status_code != 200:
            assert time.time() < deadline
            time.sleep(0.5)
        for i in range(30):  # repeats hit the cache; feedback moves the click-through rate
            r = requests.post(f"{url}/recommend", json={"history": [1 + i % 4, 2, 3], "k": 3}, timeout=30)
            assert r.status_code == 200
            body = r.json()
            f = requests.post(
                f"{url}/feedback",
                json={"request_id": body["request_id"], "item_id": body["items"][0], "reward": i % 2},
                timeout=30,
            )
            assert f.status_code == 200
        missing = scraper.wait_for(SERVE, timeout=90)
        assert not missing, f"serving metrics not exported: {missing}"
        # This replica's own version series (names alone may have been seen from an earlier app's replicas
        # when other tests deployed apps on the same cluster first).
        # (the version @champion points at now: an earlier test on the cluster may have moved the alias)
        served = requests.get(f"{url}/version", timeout=10).json()["model_version"]
        assert served.startswith(f"{SERVE_MODEL}/")
        want = f'model="{served}"'
        deadline = time.time() + 90
        while True:
            version_lines = [
                ln for ln in scraper.text.splitlines() if "lmrec_serve_model_version" in ln and not ln.startswith("#")
            ]
            if any(want in ln for ln in version_lines) or time.time() > deadline:
                break
            time.sleep(1.0)
        assert any(want in ln for ln in version_lines), version_lines[:3]
        serve.delete("it-metrics")
    finally:
        scraper.stop.set()
