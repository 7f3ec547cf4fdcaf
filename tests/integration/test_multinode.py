"""Nodes join, a training run spreads over them, a node is lost mid-run and the run recovers
from its checkpoint (multinode_scenario.py, on `ray.cluster_utils.Cluster`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent


@pytest.mark.timeout(1200)  # the scenario subprocess alone may take up to 900 s
def test_training_spreads_over_nodes_and_survives_losing_one(mlflow_server, tmp_path: Path) -> None:
    out = tmp_path / "multinode.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own cluster, not the session's
    proc = subprocess.run(
        [sys.executable, str(HERE / "multinode_scenario.py"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), f"rc={proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    report = json.loads(out.read_text())
    detail = f"{report}\n{proc.stderr[-4000:]}"
    assert report["nodes_alive_at_start"] == 3, detail  # head + two workers joined
    assert len(report.get("worker_nodes_before", [])) == 2, detail  # one training worker per node (STRICT_SPREAD)
    assert report["removed_node"] in report["worker_nodes_before"], detail
    assert "error" not in report, detail
    assert report["restarts"] >= 1, detail  # the worker group was restarted from a checkpoint
    assert report["epochs_completed"] == [0, 1, 2, 3], detail  # nothing lost, nothing repeated
    assert report["history_steps"] == [8, 16, 24, 32] and report["global_step"] == 32, detail
    assert set(report["worker_nodes_after"]) - set(report["worker_nodes_before"]), detail  # ran on the new node
    assert report["test_ndcg_at_10"] > 0, detail
