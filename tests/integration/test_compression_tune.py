"""Compression search on real services: a registered teacher, Optuna multi-objective + ASHA over
Ray Train runs driven from Tune trials, nested MLflow runs, a Pareto front registered as versions,
a failing trial that does not stop the search, and bad input refused before any trial."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmrec.compression.artifacts import load_variant
from lmrec.config import load_config
from lmrec.models import SeqRecModel, build_config, init_weights_
from lmrec.models.artifacts import save_model_dir
from lmrec.tracking import mlflow_utils as mt
from lmrec.tuning.compression import NDCG_KEY, TuneCompressionConfig, run_compression_search

pytestmark = pytest.mark.integration

EXPERIMENT = "it-compression"


def _register(model: SeqRecModel, item_ids: list[int], folder: Path, uri: str) -> str:
    save_model_dir(folder, model.config, model.state_dict(), item_ids, {"dataset": "synthetic"})
    run_id = mt.start_run(EXPERIMENT, "teacher", uri=uri)
    mt.RunLogger(run_id, uri).artifacts(folder, mt.MODEL_ARTIFACT_PATH)
    mt.RunLogger(run_id, uri).end()
    return mt.register_model(run_id, "lmrec-seqrec", tags={"kind": "trained"}, uri=uri)


@pytest.fixture(scope="module")
def teacher_uri(ray_cluster, mlflow_server, synthetic_prepared, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """A tiny teacher trained in-process with the standard loop on the shared synthetic dataset."""
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.context import LocalContext
    from lmrec.training.loop import run_training

    data_cfg, prepared = synthetic_prepared
    model = SeqRecModel(build_config("tiny", prepared.num_items, max_seq_len=30, dropout=0.1))
    init_weights_(model, 0)
    job = load_config(
        TrainJobConfig,
        None,
        ["train.epochs=2", "train.strategy=none", "train.lr=0.003", "eval.protocols=[full]", "eval.every_epochs=0"],
    )
    job.prepared_path = str(prepared.path)
    run_training(job, LocalContext(), model=model)
    version = _register(model, prepared.manifest["item_ids"], tmp_path_factory.mktemp("teacher"), mlflow_server.uri)
    return f"models:/lmrec-seqrec/{version}"


def _cfg(teacher: str, data_cfg, *extra: str) -> TuneCompressionConfig:  # type: ignore[no-untyped-def]
    cfg = load_config(
        TuneCompressionConfig,
        None,
        [
            f"teacher={teacher}",
            "distill_steps=20",
            "train.batch_size=64",
            "train.lr=0.003",
            "train.strategy=none",
            "eval.protocols=[full]",
            "eval.ks=[10]",
            "eval.max_users=200",
            "latency.iters=4",
            "latency.rounds=1",
            "latency.warmup=1",
            "calibration_rows=32",
            f"tracking.experiment={EXPERIMENT}",
            *extra,
        ],
    )
    cfg.data = data_cfg  # the shared synthetic dataset (already prepared: a cache hit)
    return cfg


def _children(client, parent: str) -> list:  # type: ignore[no-untyped-def]
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=100
    )


def test_search_nests_trials_registers_the_front_and_survives_a_failing_trial(
    ray_cluster,
    mlflow_server,
    synthetic_prepared,
    teacher_uri: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from mlflow import MlflowClient

    data_cfg, _ = synthetic_prepared
    cfg = _cfg(
        teacher_uri,
        data_cfg,
        "space.student_layers=[1]",
        "space.student_hidden=[16, 33]",  # width 33: odd head dim, the trial fails
        "space.prune=[structured]",
        "space.prune_amount=[0.5]",
        "space.finetune_steps=[0]",
        # grace period past every trial's last report: ASHA must not stop trials in this small search
        "search.num_samples=3",
        "search.max_concurrent=2",
        "search.grace_period=50",
        f"out={tmp_path / 'out.json'}",
    )
    cfg.search.points_to_evaluate = [
        {
            "student": True,
            "student_layers": 1,
            "student_hidden": 16,
            "temperature": 2.0,
            "alpha": 0.5,
            "quantize": "none",
        },
        {"student": False, "prune": "structured", "prune_amount": 0.5, "finetune_steps": 0, "quantize": "int8"},
        {
            "student": True,
            "student_layers": 1,
            "student_hidden": 33,
            "temperature": 2.0,
            "alpha": 0.5,
            "quantize": "none",
        },
    ]
    result = run_compression_search(cfg)

    assert len(result.failed) == 1 and result.failed[0]["params"].get("student_hidden") == 33
    assert "head dim 33 must be even" in result.failed[0]["error"]
    finished = [t for t in result.trials if t["status"] == "finished"]
    assert len(finished) == 2 and {t["label"] for t in finished} == {"student 1x16", "structured 0.50, int8"}
    assert result.front and all(r.get("model_version") for r in result.front)

    client = MlflowClient(mlflow_server.uri)
    children = _children(client, result.parent_run_id)
    assert len(children) == 3  # one run per trial, nested under the search run
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED", "FINISHED"]
    student_run = next(c for c in children if c.data.params.get("student_hidden") == "16")
    history = client.get_metric_history(student_run.info.run_id, NDCG_KEY)
    assert len(history) >= 3  # per-epoch validation from the Ray Train run (2 epochs) + the final report
    assert "size_bytes" in student_run.data.metrics and "b64/p50_ms" in student_run.data.metrics

    parent_artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"pareto_front.png", "pareto_front.md", "search.json", "teacher.json"} <= parent_artifacts
    for row in result.front:  # registered versions carry compression tags and load as served
        mv = client.get_model_version("lmrec-seqrec", row["model_version"])
        assert mv.tags["kind"] == "compressed" and "compression.quantize" in mv.tags
        local = mt.download_model(f"models:/lmrec-seqrec/{row['model_version']}", uri=mlflow_server.uri)
        model, vocab, meta = load_variant(local)
        x = torch.randint(1, model.config.num_items + 1, (2, 10))
        with torch.no_grad():
            assert model(x).shape == (2, model.config.num_items + 1)
        assert meta["compression"]["quantization"] == row["spec"]["quantize"]
    assert (tmp_path / "out.json").exists()

    # `lmrec compress --front` lists exactly this search's registered variants; `lmrec promote` picks one.
    from lmrec.cli import front_versions, main

    listed = front_versions("lmrec-seqrec", mlflow_server.uri, result.parent_run_id)
    assert sorted(r["version"] for r in listed) == sorted(str(r["model_version"]) for r in result.front)
    assert main(["compress", "--front", "--search-run", result.parent_run_id, "--tracking-uri", mlflow_server.uri]) == 0
    pick = listed[0]["version"]
    assert main(["promote", "--name", "lmrec-seqrec", "--version", pick, "--to", "it-compressed-champion"]) == 0
    assert client.get_model_version_by_alias("lmrec-seqrec", "it-compressed-champion").version == pick


def test_bad_input_fails_before_any_trial(ray_cluster, mlflow_server, synthetic_prepared, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    data_cfg, prepared = synthetic_prepared
    client = MlflowClient(mlflow_server.uri)
    before = len(client.search_runs([mt.ensure_experiment(EXPERIMENT, mlflow_server.uri)], max_results=1000))

    with pytest.raises(ValueError, match="no such registered model version"):
        run_compression_search(_cfg("models:/lmrec-seqrec/9999", data_cfg, f"search.storage_path={tmp_path}"))

    other = SeqRecModel(build_config("tiny", prepared.num_items + 7, max_seq_len=30))  # another catalog
    version = _register(other, list(range(prepared.num_items + 7)), tmp_path / "other", mlflow_server.uri)
    with pytest.raises(ValueError, match="does not fit dataset"):
        run_compression_search(_cfg(f"models:/lmrec-seqrec/{version}", data_cfg, f"search.storage_path={tmp_path}"))

    after = client.search_runs([mt.ensure_experiment(EXPERIMENT, mlflow_server.uri)], max_results=1000)
    assert len(after) == before + 1  # only the mismatched teacher's own run: no search run, no trial runs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("compress-")]  # no Tune experiment folder
