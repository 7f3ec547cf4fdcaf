"""The whole loop submitted from a "laptop" (plain `ray job submit`, then `lmrec submit` over the Ray Jobs SDK) to a real `ray start --head`:
prepare -> train -> evaluate -> compress -> explore -> promote -> deploy on tiny synthetic data.

It must reach SUCCEEDED, leave one MLflow run per stage linked by the pipeline run ID, set
the `champion` alias, and the running Serve app must report that version on /version. The job
is submitted twice under the same name: the first submission runs the first three stages,
the second resumes, skips them (same pipeline run, same trained version) and runs the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = "it-pipeline-seqrec"
EXPERIMENT = "it-pipeline"


def _submit(client, name: str, *overrides: str, cli: bool = False) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Submit with the Jobs SDK, or (cli=True) with plain `ray job submit` as the docs show."""
    from ray.job_submission import JobStatus

    sid = f"{name}-{int(time.time() * 1000)}"
    entry = ["python", "jobs/pipeline.py", "--config", "jobs/configs/pipeline/tiny.yaml", f"name={name}", *overrides]
    if cli:
        cmd = [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            "--address",
            client.get_address(),
            "--submission-id",
            sid,
            "--working-dir",
            ".",
            "--no-wait",
            "--",
            *entry,
        ]
        env = {**os.environ, "RAY_AUTH_MODE": "token"}  # a laptop client needs the cluster's token
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    else:  # `lmrec submit`: the config is validated here first, then the Jobs SDK submits it
        from lmrec.cluster import jobs

        out = jobs.submit(
            "pipeline",
            "jobs/configs/pipeline/tiny.yaml",
            [f"name={name}", *overrides],
            address=client.get_address(),
            working_dir=str(ROOT),
            submission_id=sid,
        )
        assert out["submission_id"] == sid and out["dashboard_url"].endswith(f"/#/jobs/{sid}")
        assert not out["note"]  # loopback MLflow + loopback cluster: the URI is forwarded
    deadline = time.time() + 900
    while time.time() < deadline:
        status = client.get_job_status(sid)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(0.5)
    from lmrec.cluster import jobs

    logs = jobs.logs(sid, client.get_address())  # what `lmrec logs` prints
    assert status == JobStatus.SUCCEEDED, f"{sid}: {status}\n{logs[-6000:]}"
    assert jobs.status(sid, client.get_address())[0]["status"].endswith("SUCCEEDED")  # `lmrec status`
    return sid, logs


def test_pipeline_job_runs_every_stage_resumes_by_name_and_serves_the_champion(
    ray_cluster, mlflow_server, serve_http
) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard_url)
    name = f"it-pipeline-{int(time.time())}"
    port = serve_http.rsplit(":", 1)[1]
    common = [
        f"train.tracking.model_name={MODEL}",
        f"train.tracking.experiment={EXPERIMENT}",
        f"compress.tracking.experiment={EXPERIMENT}",
        f"explore.tracking.experiment={EXPERIMENT}",
        f"tracking.experiment={EXPERIMENT}",
        f"deploy.port={port}",
        "deploy.app_name=it-pipeline",
        "deploy.route_prefix=/pipeline",
        # Each stage at its smallest, so that the jobs spawn few Ray worker processes (each imports torch):
        # one training epoch; one compression trial that quantizes the teacher (no Ray Train run inside
        # the trial: distillation from Tune trials is test_compression_tune.py's); one exploration trial.
        "train.train.epochs=1",
        "compress.space.student=[false]",
        "compress.space.quantize=[int8]",
        "compress.search.num_samples=1",
        "compress.search.max_concurrent=1",
        "explore.search.num_samples=1",
        "explore.search.max_concurrent=1",
    ]

    # 1st submission: stops after evaluation (as if the job had been cut there).
    _, logs1 = _submit(client, name, "stages=[prepare,train,evaluate]", *common, cli=True)
    assert "stage evaluate: done" in logs1 and "stage compress" not in logs1
    # 2nd submission, same name: resumes at compress; nothing before it runs again.
    _, logs2 = _submit(client, name, *common)
    for stage in ("prepare", "train", "evaluate"):
        assert f"stage {stage}: already done, skipped" in logs2
    for stage in ("compress", "explore", "promote", "deploy"):
        assert f"stage {stage}: done" in logs2
    run_id = logs1.split("MLflow run ")[1].split()[0]
    assert f"resuming pipeline {name} (run {run_id})" in logs2

    mc = MlflowClient(mlflow_server.uri)
    exp = mc.get_experiment_by_name(EXPERIMENT)
    parent = mc.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert {
        parent.data.tags.get(f"lmrec.stage.{s}")
        for s in ("prepare", "train", "evaluate", "compress", "explore", "promote", "deploy")
    } == {"done"}
    linked = mc.search_runs([exp.experiment_id], filter_string=f"tags.`lmrec.pipeline_run_id` = '{run_id}'")
    kinds = sorted(r.data.tags.get("lmrec.kind") for r in linked)
    assert kinds == ["compression_search", "evaluate", "exploration_search", "train"], kinds
    assert all(r.data.tags.get("mlflow.parentRunId") == run_id for r in linked)  # nested under the pipeline run
    train_run = next(r for r in linked if r.data.tags["lmrec.kind"] == "train")
    assert train_run.info.status == "FINISHED" and "final/test/full/ndcg_at_10" in train_run.data.metrics
    assert (
        len(
            mc.search_runs(
                [exp.experiment_id], filter_string=f"tags.`lmrec.kind` = 'train' and tags.`lmrec.pipeline` = '{name}'"
            )
        )
        == 1
    )
    for search in (
        r for r in linked if r.data.tags["lmrec.kind"].endswith("_search")
    ):  # trials nested under each search
        assert mc.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{search.info.run_id}'")

    champion = mc.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == train_run.info.run_id  # promote.source=trained in tiny.yaml
    with urllib.request.urlopen(f"{serve_http}/pipeline/version", timeout=10) as r:
        version = json.loads(r.read())
    assert version["model_version"] == f"{MODEL}/{champion.version}"
    body = json.dumps({"history": [1, 2, 3], "k": 5}).encode()
    req = urllib.request.Request(
        f"{serve_http}/pipeline/recommend", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        rec = json.loads(r.read())
    assert len(rec["items"]) == 5 and rec["model_version"] == f"{MODEL}/{champion.version}"

    from ray import serve

    serve.delete("it-pipeline")
