"""Exploration on real services: Ray Data reads our feedback logs; a small Ray Tune search
(Optuna, trials in parallel; ASHA on replay) leaves nested MLflow runs and a loadable best policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmrec.config import load_config
from lmrec.exploration.artifacts import load_policy
from lmrec.exploration.logs import FEEDBACK_SCHEMA, FeedbackLogError, FeedbackLogWriter, read_logs, records_to_table
from lmrec.exploration.policies import build_policy
from lmrec.exploration.simulate import SyntheticBandit
from lmrec.tuning.exploration import TuneExplorationConfig, run_exploration_search
from lmrec.tuning.feedback_io import dataset_to_table, read_feedback_logs

pytestmark = pytest.mark.integration

N_REQUESTS = 1500


@pytest.fixture(scope="module")
def feedback_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logs written by a softmax policy on a synthetic bandit, in two daily partitions."""
    root = tmp_path_factory.mktemp("feedback")
    env = SyntheticBandit(num_items=80, num_candidates=12, slate_size=3, base_ctr=0.08, seed=3)
    policy = build_policy({"type": "softmax", "temperature": 1.0, "slate_size": 3})
    with FeedbackLogWriter(root, batch_size=500) as writer:
        env.simulate(policy, N_REQUESTS, writer, seconds_between=100.0)  # 1500 * 100 s spans two days
    return root


def test_ray_data_reads_our_logs(ray_cluster, feedback_logs: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ds = read_feedback_logs(feedback_logs)
    assert ds.count() == N_REQUESTS
    assert {"date", "path"} <= set(ds.columns())
    dates = sorted({r["date"] for r in ds.select_columns(["date"]).take_all()})
    assert dates == ["2024-01-01", "2024-01-02"]
    table = dataset_to_table(ds)
    assert table.schema.equals(FEEDBACK_SCHEMA)
    local = read_logs(feedback_logs)
    assert sorted(table["request_id"].to_pylist()) == sorted(local["request_id"].to_pylist())

    # a file with bad propensities: the read task fails and the error names the file
    bad_root = tmp_path / "bad"
    shutil.copytree(feedback_logs, bad_root)
    rows = local.slice(0, 5).to_pylist()
    rows[1]["propensities"] = [0.0] * len(rows[1]["propensities"])
    rows[3]["propensities"] = [1.5] * len(rows[3]["propensities"])
    bad_file = bad_root / "date=2024-01-01" / "part-bad.parquet"
    pq.write_table(records_to_table(rows), bad_file)
    with pytest.raises(Exception) as err:
        read_feedback_logs(bad_root).materialize()
    assert "part-bad.parquet" in str(err.value) and "2 of 5 row(s)" in str(err.value)

    # a schema mismatch is caught on the driver before any read task runs
    odd_root = tmp_path / "odd"
    shutil.copytree(feedback_logs, odd_root)
    odd = records_to_table(rows[:1]).drop_columns(["policy_params"])
    pq.write_table(odd.replace_schema_metadata(FEEDBACK_SCHEMA.metadata), odd_root / "date=2024-01-02" / "part-odd.parquet")
    with pytest.raises(FeedbackLogError) as err2:
        read_feedback_logs(odd_root)
    assert "part-odd.parquet" in str(err2.value) and err2.value.column == "policy_params"


def _children(client, parent: str) -> list:  # type: ignore[no-untyped-def]
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exp_ids, filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=100)


def test_tune_search_on_logs_nests_trials_and_saves_the_best_policy(ray_cluster, mlflow_server, feedback_logs: Path) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    cfg = load_config(TuneExplorationConfig, None, [
        "scenario=logs", f"logs.path={feedback_logs}", "logs.n_bootstrap=50", "logs.n_sim=100",
        "search.num_samples=4", "search.max_concurrent=2", "search.eval_repeats=1",
        "tracking.experiment=it-exploration", "tracking.alias=it",
    ])
    result = run_exploration_search(cfg)
    client = MlflowClient(mlflow_server.uri)
    children = _children(client, result.parent_run_id)
    assert len(children) == 4  # one MLflow run per trial, nested under the search
    assert {c.data.params["policy"] for c in children} >= {"greedy", "epsilon_greedy"}  # baselines go first
    objectives = [c.data.metrics["objective"] for c in children]
    assert result.best_metrics["objective"] == pytest.approx(max(objectives))

    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["lmrec.kind"] == "exploration_search"
    assert parent.data.tags["lmrec.best_policy"] == result.best.type
    assert "policy/policy.json" in [a.path for a in client.list_artifacts(result.parent_run_id, "policy")]
    by_run = load_policy(result.parent_run_id)
    by_alias = load_policy("models:/lmrec-exploration-policy@it")
    assert by_run.config == by_alias.config == result.best
    assert set(result.comparison) >= {"greedy", "epsilon_greedy (epsilon=0.1)"}


def test_tune_replay_uses_asha_on_intermediate_reports(ray_cluster, mlflow_server) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    cfg = load_config(TuneExplorationConfig, None, [
        "scenario=replay", "replay.scorer=popularity", "replay.max_events=600", "replay.calibration_events=300",
        "replay.report_every=100", "search.num_samples=4", "search.max_concurrent=2", "search.grace_period=1",
        "search.eval_repeats=1", "search.scheduler=asha", "tracking.experiment=it-exploration-replay", "tracking.register=false",
    ])
    result = run_exploration_search(cfg)
    client = MlflowClient(mlflow_server.uri)
    children = _children(client, result.parent_run_id)
    assert len(children) == 4
    steps = [len(client.get_metric_history(c.info.run_id, "objective")) for c in children]
    assert max(steps) == 6  # 600 events reported every 100
    finished = [r for r in result.trials if r.get("metrics", {}).get("events") == 600]
    assert result.best_metrics["objective"] == pytest.approx(max(r["metrics"]["objective"] for r in finished))
    assert "replay_heldout.png" in [a.path for a in client.list_artifacts(result.parent_run_id)]
    assert result.policy_uri == f"runs:/{result.parent_run_id}/policy" and result.model_version is None
    np.testing.assert_equal(load_policy(result.policy_uri).config.score_scale, result.best.score_scale)
