"""The pipeline job's config and stage state: bad input named before Ray, resume bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrec.config import ConfigError, load_config
from lmrec.pipeline import STAGES, PipelineConfig, PipelineState

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_pipeline_configs_validate() -> None:
    for path in sorted((ROOT / "jobs/configs/pipeline").glob("*.yaml")):
        cfg = load_config(PipelineConfig, str(path), [])
        assert cfg.stages == list(STAGES)
        assert cfg.name


@pytest.mark.parametrize(
    "override, key",
    [
        ("stages=[train, prepare]", "stages"),
        ("stages=[prepare, shipit]", "stages"),
        ("name=a/b", "name"),
        ("deploy.port=0", "deploy.port"),
        ("deploy.route_prefix=api", "deploy.route_prefix"),
        ("promote.source=best", "promote.source"),
        ("deploy.app.max_k=-1", "deploy.app.max_k"),
        ("train.train.epochs=0", "train.train.epochs"),
        ("compress.search.num_samples=0", "compress.search.num_samples"),
    ],
)
def test_bad_pipeline_config_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PipelineConfig, str(ROOT / "jobs/configs/pipeline/tiny.yaml"), [override])
    assert key in str(err.value)


def test_state_is_written_atomically_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "p" / "state.json"
    st = PipelineState(path)
    assert not st.done("train")
    st.data["pipeline_run_id"] = "abc"
    st.record("prepare", {"prepared_path": "/x"})
    st.record("train", {"model_version": "3"})
    assert not path.with_suffix(".tmp").exists()
    again = PipelineState(path)
    assert again.done("prepare") and again.done("train") and not again.done("evaluate")
    assert again.output("train")["model_version"] == "3" and again.data["pipeline_run_id"] == "abc"
    assert json.loads(path.read_text())["stages"]["prepare"]["prepared_path"] == "/x"


def test_missing_exploration_inputs_fail_before_ray_starts(tmp_path: Path) -> None:
    import sys

    from lmrec.pipeline import run_pipeline

    cfg = load_config(
        PipelineConfig,
        str(ROOT / "jobs/configs/pipeline/tiny.yaml"),
        ["explore.scenario=obd", "explore.obd.data_dir=/no/such/data", f"state_dir={tmp_path}"],
    )
    ray_before = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    with pytest.raises(ConfigError) as err:
        run_pipeline(cfg)
    assert err.value.key == "explore.obd.data_dir" and "/no/such/data" in str(err.value)
    assert not ray_before and not ("ray" in sys.modules and sys.modules["ray"].is_initialized())
    assert not list(tmp_path.iterdir())  # no pipeline state was started
