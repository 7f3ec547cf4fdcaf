"""`ray job submit` from a "laptop" (this process) to a real head started with
`ray start --head`: the tiny training job reaches SUCCEEDED and leaves an MLflow run and
a registered model version on the tracking server the cluster points at."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_ray_job_submit_trains_and_registers(ray_cluster, mlflow_server) -> None:
    from mlflow import MlflowClient
    from ray.job_submission import JobStatus, JobSubmissionClient

    submission_id = f"it-train-{int(time.time())}"
    cmd = [
        str(Path(sys.executable).parent / "ray"), "job", "submit",
        "--address", ray_cluster.dashboard_url, "--submission-id", submission_id, "--working-dir", ".",
        "--", "python", "jobs/train.py", "--config", "jobs/configs/train/ml100k_tiny.yaml",
        "data.fallback_to_synthetic=true", "train.epochs=1", "train.max_steps_per_epoch=4",
        "eval.protocols=[full]", "eval.max_users=200", "tracking.experiment=it-job-submit",
    ]
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # a laptop client needs the cluster's token
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    status = client.get_job_status(submission_id)
    logs = client.get_job_logs(submission_id)
    assert status == JobStatus.SUCCEEDED, f"{status}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}\n{logs[-3000:]}"
    assert "MLflow run" in logs and "final metrics" in logs

    c = MlflowClient(mlflow_server.uri)
    exp = c.get_experiment_by_name("it-job-submit")
    assert exp is not None
    runs = c.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert "final/test/full/ndcg_at_10" in run.data.metrics
    versions = c.search_model_versions(f"run_id='{run.info.run_id}'")
    assert len(versions) == 1 and versions[0].name == "lmrec-seqrec"
