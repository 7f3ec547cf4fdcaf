"""Exploration on real services: Ray Data reads our feedback logs; a small Ray Tune search
(Optuna, trials in parallel; ASHA on replay) leaves nested MLflow runs and a loadable best policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lmrec.config import load_config
from lmrec.exploration.artifacts import load_policy
from lmrec.exploration.logs import FEEDBACK_SCHEMA, FeedbackLogError, FeedbackLogWriter, read_logs, records_to_table
from lmrec.exploration.policies import build_policy
from lmrec.exploration.simulate import SyntheticBandit
from lmrec.tuning.exploration import TuneExplorationConfig, run_exploration_search
from lmrec.tuning.feedback_io import dataset_to_table, read_feedback_logs

# Ray Data reads these small logs with one footer reader (see the fixture).
pytestmark = pytest.mark.integration

N_REQUESTS = 1500
# The interrupted search: killed once 2 trials are TERMINATED in Tune's saved state, which
# lags the trials by at most a second (TUNE_GLOBAL_CHECKPOINT_S=1) while each trial takes
# about a second, so 4 trials left over are the margin that the kill lands mid-search.
RESUME_TRIALS = 6


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
    ds = read_feedback_logs(feedback_logs).materialize()  # one read; the checks below reuse it
    assert ds.count() == N_REQUESTS
    assert {"date", "path"} <= set(ds.columns())
    raw = ds.to_arrow_refs()
    import ray

    dates = sorted({d for t in ray.get(raw) for d in t["date"].to_pylist()})
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
    pq.write_table(
        odd.replace_schema_metadata(FEEDBACK_SCHEMA.metadata), odd_root / "date=2024-01-02" / "part-odd.parquet"
    )
    with pytest.raises(FeedbackLogError) as err2:
        read_feedback_logs(odd_root)
    assert "part-odd.parquet" in str(err2.value) and err2.value.column == "policy_params"


def _children(client, parent: str) -> list:  # type: ignore[no-untyped-def]
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exp_ids, filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=100)


def test_tune_search_on_logs_nests_trials_and_saves_the_best_policy(
    ray_cluster, mlflow_server, feedback_logs: Path
) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    cfg = load_config(
        TuneExplorationConfig,
        None,
        [
            "scenario=logs",
            f"logs.path={feedback_logs}",
            "logs.n_bootstrap=50",
            "logs.n_sim=100",
            "logs.l2=1.0",
            "search.num_samples=4",
            "search.max_concurrent=2",
            "search.eval_repeats=1",
            "tracking.experiment=it-exploration",
            "tracking.alias=it",
        ],
    )
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


def _replay_data() -> list[str]:
    """ML-100k when its files are here (LMREC_DATA_DIR / ../shared/data), else the synthetic timeline."""
    from lmrec.data.download import locate_dataset
    from lmrec.data.readers import dataset_spec
    from lmrec.paths import data_dir

    try:
        locate_dataset(dataset_spec("ml-100k"), data_dir(None), download=False)
        return []
    except Exception:  # noqa: BLE001 (absent: MovieLens may not be redistributed)
        return ["replay.dataset=synthetic"]


def test_tune_replay_uses_asha_on_intermediate_reports(ray_cluster, mlflow_server) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    cfg = load_config(
        TuneExplorationConfig,
        None,
        [
            "scenario=replay",
            "replay.scorer=popularity",
            "replay.max_events=600",
            "replay.calibration_events=300",
            "replay.report_every=100",
            "search.num_samples=4",
            "search.max_concurrent=2",
            "search.grace_period=1",
            "search.eval_repeats=1",
            "search.scheduler=asha",
            "tracking.experiment=it-exploration-replay",
            "tracking.register=false",
            *_replay_data(),
        ],
    )
    result = run_exploration_search(cfg)
    client = MlflowClient(mlflow_server.uri)
    children = _children(client, result.parent_run_id)
    assert len(children) == 4
    steps = [len(client.get_metric_history(c.info.run_id, "objective")) for c in children]
    events = min(600, result.scenario_info["tune_events"])
    assert max(steps) == -(-events // 100)  # one report per 100 events (and one for a partial last block)
    finished = [r for r in result.trials if r.get("metrics", {}).get("events") == events]
    assert result.best_metrics["objective"] == pytest.approx(max(r["metrics"]["objective"] for r in finished))
    assert "replay_heldout.png" in [a.path for a in client.list_artifacts(result.parent_run_id)]
    assert result.policy_uri == f"runs:/{result.parent_run_id}/policy" and result.model_version is None
    np.testing.assert_equal(load_policy(result.policy_uri).config.score_scale, result.best.score_scale)


def test_tune_replay_with_validation_period_picks_among_finalists(ray_cluster, mlflow_server) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    from lmrec.exploration.objectives import policy_config

    cfg = load_config(
        TuneExplorationConfig,
        None,
        [
            "scenario=replay",
            "replay.scorer=popularity",
            "replay.train_frac=0.25",
            "replay.tune_frac=0.25",
            "replay.valid_frac=0.25",
            "replay.max_events=400",
            "replay.calibration_events=300",
            "replay.report_every=100",
            "space.ucb_c_zero=true",
            "search.num_samples=4",
            "search.max_concurrent=2",
            "search.grace_period=1",
            "search.finalists=3",
            "search.valid_repeats=2",
            "search.eval_repeats=2",
            "tracking.experiment=it-exploration-valid",
            "tracking.register=false",
            *_replay_data(),
        ],
    )
    result = run_exploration_search(cfg)
    assert result.scenario_info["valid_events"] > 0 and len(result.scenario_info["split_ts"]) == 3
    sel = result.selection
    assert 1 <= len(sel) <= 3 and sum(r["chosen"] for r in sel) == 1
    chosen = next(r for r in sel if r["chosen"])
    assert chosen["valid"]["objective"] == max(r["valid"]["objective"] for r in sel)
    assert policy_config(chosen["params"], result.best.to_dict()) == result.best  # the validation winner is what ships
    assert [r["search_objective"] for r in sel] == sorted((r["search_objective"] for r in sel), reverse=True)
    client = MlflowClient(mlflow_server.uri)
    assert "selection.json" in [a.path for a in client.list_artifacts(result.parent_run_id)]
    assert client.get_run(result.parent_run_id).data.metrics["valid/estimate"] == pytest.approx(
        chosen["valid"]["estimate"]
    )
    greedy = result.comparison["greedy"]
    assert greedy["diff_vs_greedy"] == 0.0 and all("diff_vs_greedy_se" in m for m in result.comparison.values())


def _finished_trials(exp: Path) -> dict[str, int]:
    """Trials TERMINATED in Tune's last saved experiment state -> result lines in their folder.

    That state, not a trial's own result file, is what a resumed search trusts: a trial
    that finished after the last state save is (correctly) run again on resume.
    """
    import json

    states = sorted(exp.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except ValueError:  # being rewritten right now
        return {}
    done = {json.loads(t[0])["trial_id"] for t in data["trial_data"] if json.loads(t[0]).get("status") == "TERMINATED"}
    out = {}
    for trial_id in done:
        for f in exp.glob(f"*_{trial_id}_*/result.json"):
            out[trial_id] = len([ln for ln in f.read_text().splitlines() if ln.strip()])
    return out


def test_interrupted_tune_search_resumes_without_rerunning_finished_trials(
    ray_cluster,
    mlflow_server,
    feedback_logs: Path,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from mlflow import MlflowClient

    overrides = [
        "scenario=logs",
        f"logs.path={feedback_logs}",
        "logs.n_bootstrap=200",
        "logs.n_sim=200",
        "logs.l2=1.0",
        f"search.num_samples={RESUME_TRIALS}",
        "search.max_concurrent=1",
        "search.eval_repeats=1",
        "search.name=it-resume",
        f"search.storage_path={tmp_path}",
        "tracking.experiment=it-exploration-resume",
        "tracking.register=false",
    ]
    script = (
        "import sys; from lmrec.config import load_config; "
        "from lmrec.tuning.exploration import TuneExplorationConfig, run_exploration_search; "
        "run_exploration_search(load_config(TuneExplorationConfig, None, sys.argv[1:]))"
    )
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}  # Tune saves its experiment state every second
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *overrides],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    exp = tmp_path / "it-resume"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(_finished_trials(exp)) < 2:
        time.sleep(0.2)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-search (laptop closed, head pre-empted)
    proc.wait()
    before = _finished_trials(exp)
    assert 2 <= len(before) < RESUME_TRIALS, before
    first_run = __import__("json").loads((exp / "lmrec_search.json").read_text())["search_run_id"]

    result = run_exploration_search(load_config(TuneExplorationConfig, None, overrides))  # same name: resumes
    after = _finished_trials(exp)
    assert len(after) == RESUME_TRIALS and len(result.trials) == RESUME_TRIALS, (before, after)
    for trial, lines in before.items():
        assert lines == 1 and after[trial] == 1, f"finished trial {trial} was run again"
    assert result.parent_run_id == first_run  # the same MLflow search run continues
    parent = MlflowClient(mlflow_server.uri).get_run(first_run)
    assert parent.info.status == "FINISHED" and parent.data.tags["lmrec.trials"] == str(RESUME_TRIALS)
