"""Training on a real Ray cluster: Ray Data prep, 2-worker FSDP via Ray Train, a real
MLflow server (params, per-epoch metrics, artifacts, registered version + alias), and
`lmrec evaluate` on the registered model and on the checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmrec.config import load_config
from lmrec.data.prepare import prepare_dataset, prepare_local
from lmrec.data.sequences import SequenceData
from lmrec.data.synthetic import generate
from lmrec.evaluation.protocols import evaluate_scorer, popularity_scorer
from lmrec.training.config import TrainJobConfig
from lmrec.training.trainer import run_train_job

pytestmark = pytest.mark.integration


def test_ray_data_pipeline_matches_in_process_preparation(synthetic_prepared, tmp_path: Path) -> None:
    cfg, prepared = synthetic_prepared
    assert not prepared.cached or prepared.path.exists()
    local = prepare_local(cfg, generate(cfg.synthetic), tmp_path / "local")
    a, b = SequenceData.load(prepared.path), SequenceData.load(local.path)
    assert a.num_users == b.num_users and a.num_items == b.num_items
    assert (a.items == b.items).all() and (a.offsets == b.offsets).all() and (a.ts == b.ts).all()
    assert prepared.manifest["item_ids"] == local.manifest["item_ids"]
    again = prepare_dataset(cfg)
    assert again.cached and again.path == prepared.path  # cached by config hash: no second pipeline run
    # The in-process engine (Serve replicas) writes the same files under the same key.
    inproc = prepare_dataset(cfg, cache_root=tmp_path / "engine-local", engine="local")
    c = SequenceData.load(inproc.path)
    assert inproc.path.name == prepared.path.name and inproc.manifest["config_hash"] == prepared.manifest["config_hash"]
    assert (a.items == c.items).all() and (a.offsets == c.offsets).all() and (a.ts == c.ts).all()
    assert (a.user_ids == c.user_ids).all() and inproc.manifest["item_ids"] == prepared.manifest["item_ids"]


@pytest.fixture(scope="module")
def trained(synthetic_prepared, mlflow_server, tmp_path_factory):
    cfg, _ = synthetic_prepared
    job = load_config(
        TrainJobConfig,
        None,
        [
            "data.dataset=synthetic",
            "train.epochs=3",
            "train.num_workers=2",
            "train.strategy=fsdp",
            "train.batch_size=32",
            "train.lr=0.003",
            "eval.protocols=[full,sampled]",
            "eval.every_epochs=1",
            f"train.storage_path={tmp_path_factory.mktemp('storage')}",
            "tracking.experiment=it-train",
        ],
    )
    job.data = cfg
    return job, run_train_job(job)


def test_fsdp_training_learns_and_is_tracked(trained, mlflow_server) -> None:
    from mlflow import MlflowClient

    job, result = trained
    data = SequenceData.load(result.prepared.path)
    pop = evaluate_scorer(popularity_scorer(data), data, "test", protocols=["full"])
    assert result.metrics["test/full/ndcg@10"] > pop["full/ndcg@10"]
    assert result.metrics["epochs_completed"] == 3 and result.metrics["restarts"] == 0

    c = MlflowClient(mlflow_server.uri)
    run = c.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.strategy"] == "fsdp" and run.data.params["train.num_workers"] == "2"
    assert int(run.data.params["model.num_parameters"]) > 0
    history = c.get_metric_history(result.run_id, "valid/full/ndcg_at_10")
    assert sorted(m.step for m in history) == [0, 1, 2]  # one point per epoch
    assert "final/test/full/ndcg_at_10" in run.data.metrics
    names = {a.path for a in c.list_artifacts(result.run_id)}
    assert {"model", "dataset", "training_curve.png", "metrics.json"} <= names
    model_files = {Path(a.path).name for a in c.list_artifacts(result.run_id, "model")}
    assert {"model.safetensors", "config.json", "vocab.json", "metadata.json"} <= model_files
    assert not any(f.endswith((".pkl", ".pt", ".bin")) for f in model_files)
    mv = c.get_model_version_by_alias("lmrec-seqrec", "candidate")
    assert mv.run_id == result.run_id and mv.version == result.model_version
    assert mv.tags["dataset"] == "synthetic"


def _lmrec(*calls: list[str]) -> list[subprocess.CompletedProcess]:
    """Run `lmrec` CLI calls side by side (each is a fresh interpreter importing torch: seconds of CPU
    spent mostly apart from the cluster), and return their results in order."""
    exe = str(Path(sys.executable).parent / "lmrec")
    procs = [
        subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        for args in calls
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def test_lmrec_evaluate_on_registered_model_and_checkpoint(trained, tmp_path: Path) -> None:
    _, result = trained
    by_uri, by_ckpt, bad = _lmrec(
        [
            "evaluate",
            "--model-uri",
            "models:/lmrec-seqrec@candidate",
            "--protocols",
            "full",
            "--out",
            str(tmp_path / "m.json"),
        ],
        ["evaluate", "--checkpoint", result.checkpoint_path, "--protocols", "full", "--out", str(tmp_path / "c.json")],
        [
            "evaluate",
            "--model-uri",
            "models:/lmrec-seqrec@candidate",
            "--dataset",
            "synthetic",
            "synthetic.num_items=120",
            "synthetic.num_users=150",
            "--out",
            str(tmp_path / "x.json"),
        ],
    )
    for out, name in ((by_uri, "m.json"), (by_ckpt, "c.json")):
        assert out.returncode == 0, out.stderr[-2000:]
        got = json.loads((tmp_path / name).read_text())
        assert got["metrics"]["test/full/ndcg@10"] == pytest.approx(result.metrics["test/full/ndcg@10"], abs=1e-6)
    assert bad.returncode == 2 and "catalog" in bad.stderr


def test_training_search_asha_optuna_fused_attributes_each_trial_in_mlflow(
    synthetic_prepared, mlflow_server, tmp_path: Path
) -> None:
    """`lmrec tune-train` at a small size: a fused model (synthetic item attributes), ASHA + Optuna,
    every trial a nested MLflow run, the best trial chosen by validation with its test metrics and model."""
    from mlflow import MlflowClient

    from lmrec.tuning.training import TuneTrainConfig, run_train_search
    from lmrec.tuning.training.config import NDCG_KEY

    cfg, _ = synthetic_prepared
    search = load_config(
        TuneTrainConfig,
        None,
        [
            "train.epochs=2",
            "train.batch_size=64",
            "model.max_seq_len=20",
            "model.content.fusion=gate",
            "model.content.attributes=true",
            "space.id_dropout=[0.0,0.3]",
            "space.fusion=[add,gate]",
            "search.num_samples=2",
            "search.grace_period=1",
            f"search.storage_path={tmp_path}",
            "tracking.experiment=it-train-search",
            f"tracking.tracking_uri={mlflow_server.uri}",
            "tracking.register=false",
        ],
    )
    search.data = cfg
    result = run_train_search(search)
    assert len(result.trials) == 2 and not [t for t in result.trials if t["status"] == "error"]
    best = result.best
    assert best is not None and best[NDCG_KEY] == max(t[NDCG_KEY] for t in result.trials if t["status"] == "finished")
    assert best["test/full/ndcg_at_10"] > 0 and best["params"]["fusion"] in ("add", "gate")
    c = MlflowClient(mlflow_server.uri)
    exp = c.get_experiment_by_name("it-train-search")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert len(runs) == 2 and all(r.data.tags.get("lmrec.kind") == "train_trial" for r in runs)
    assert "model" in [a.path for a in c.list_artifacts(best["run_id"])]
    parent = c.get_run(result.parent_run_id)
    assert parent.data.metrics["best/valid/full/ndcg_at_10"] == pytest.approx(best[NDCG_KEY])
