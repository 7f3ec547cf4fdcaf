"""The Tune search's Ray-free parts: space, spec mapping, Pareto front, report wrapper, config checks."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from lmrec.config import ConfigError, load_config
from lmrec.tuning.compression.config import NDCG_KEY, SIZE_KEY, TuneCompressionConfig, spec_from_params
from lmrec.tuning.compression.front import pareto_front
from lmrec.tuning.compression.space import DefineCompressionSpace
from lmrec.tuning.compression.trial import ExtraMetricsContext


def _sample(space_cfg, fixed: dict) -> dict:
    study = optuna.create_study()
    study.enqueue_trial(fixed)
    trial = study.ask()
    DefineCompressionSpace(space_cfg)(trial)
    return trial.params


def test_space_is_conditional_and_maps_to_valid_specs() -> None:
    cfg = load_config(TuneCompressionConfig, None, ["distill_steps=50"])
    student = _sample(cfg.space, {"student": True, "student_layers": 2, "student_hidden": 64, "quantize": "int8"})
    assert {"temperature", "alpha"} <= set(student) and "prune" not in student
    spec = spec_from_params(student, cfg, "a")
    assert spec.has_student and spec.distill_steps == 50 and spec.prune == "none" and spec.quantize == "int8"

    pruned = _sample(cfg.space, {"student": False, "prune": "structured", "prune_amount": 0.5, "finetune_steps": 0})
    assert "temperature" not in pruned and "student_hidden" not in pruned  # nothing is distilled
    spec = spec_from_params(pruned, cfg, "b")
    assert not spec.has_student and spec.prune == "structured" and spec.prune_amount == 0.5 and spec.finetune_steps == 0

    plain = _sample(cfg.space, {"student": False, "prune": "none"})
    assert "prune_amount" not in plain and spec_from_params(plain, cfg, "c").prune_amount == 0.0


def test_pareto_front() -> None:
    keys, modes = [NDCG_KEY, "b1/p50_ms", SIZE_KEY], ["max", "min", "min"]
    rows = [
        {NDCG_KEY: 0.30, "b1/p50_ms": 10.0, SIZE_KEY: 100},  # best quality
        {NDCG_KEY: 0.25, "b1/p50_ms": 4.0, SIZE_KEY: 40},  # fast and small
        {NDCG_KEY: 0.24, "b1/p50_ms": 5.0, SIZE_KEY: 50},  # dominated by the previous one
        {NDCG_KEY: 0.25, "b1/p50_ms": 4.0, SIZE_KEY: 40},  # a tie is not domination
        {NDCG_KEY: 0.10, "b1/p50_ms": 4.0, SIZE_KEY: 10},  # smallest
    ]
    assert pareto_front(rows, keys, modes) == [0, 1, 3, 4]


def test_extra_metrics_context_adds_static_metrics_and_renames_keys() -> None:
    class Inner:
        rank, world_size, device = 0, 1, "cpu"

        def __init__(self) -> None:
            self.got: list[dict] = []

        def latest_checkpoint(self):
            return None

        def report(self, metrics, checkpoint_dir):
            self.got.append(metrics)

    inner = Inner()
    ctx = ExtraMetricsContext(inner, {"b1/p50_ms": 3.0, SIZE_KEY: 10.0})
    ctx.report({"valid/full/ndcg@10": 0.2, "epoch": 1}, None)
    assert inner.got == [{"valid/full/ndcg_at_10": 0.2, "epoch": 1, "b1/p50_ms": 3.0, SIZE_KEY: 10.0}]
    assert ctx.rank == 0 and ctx.latest_checkpoint() is None


def test_config_errors_name_their_keys() -> None:
    for overrides, key in [
        (["eval.every_epochs=0"], "eval.every_epochs"),
        (["space.alpha=[0.5, 2.0]"], "space.alpha"),
        (["space.quantize=[int4]"], "space.quantize"),
        (["train.strategy=fsdp", "train.num_workers=2"], "train.strategy"),  # magnitude pruning needs full weights
        (["search.num_samples=0"], "search.num_samples"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config(TuneCompressionConfig, None, overrides)
        assert info.value.key == key, (overrides, info.value.key)


def test_a_bad_sampled_point_is_a_config_error() -> None:
    cfg = load_config(TuneCompressionConfig, None, [])
    with pytest.raises(ConfigError):
        spec_from_params({"student": False, "prune": "structured", "prune_amount": 1.5}, cfg, "x")


def test_missing_teacher_folder_is_refused(tmp_path: Path) -> None:
    from lmrec.tuning.compression.driver import resolve_teacher

    with pytest.raises(ValueError, match="nor an existing folder"):
        resolve_teacher(str(tmp_path / "nope"), None)
