"""CompressionSpec validation, the latency harness, and variants built with the real training loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compress_helpers import NUM_ITEMS

from lmrec.compression.artifacts import load_variant, parameter_count, save_variant
from lmrec.compression.distill import distillation_loss
from lmrec.compression.latency import LatencyConfig, measure_latencies
from lmrec.compression.quantize import Int8Linear
from lmrec.compression.spec import CompressionSpec
from lmrec.compression.variant import calibration_batch
from lmrec.config import ConfigError, from_dict
from lmrec.evaluation.config import EvalConfig
from lmrec.models import SeqRecModel, build_config, init_weights_
from lmrec.training.compress import build_variant, steps_to_schedule, train_with
from lmrec.training.config import TrainConfig
from lmrec.training.steps import default_loss

TRAIN = TrainConfig(batch_size=32, lr=3e-3, strategy="none", log_every_steps=1000, seed=7)
EVAL = EvalConfig(protocols=["full"], ks=[10], every_epochs=0)


def test_spec_validation_names_the_key() -> None:
    cases = [
        ({"alpha": 1.5}, "alpha"),
        ({"temperature": 0}, "temperature"),
        ({"prune": "structured", "prune_amount": 1.0}, "prune_amount"),
        ({"prune_amount": 0.3}, "prune_amount"),  # amount without a pruning kind
        ({"student_hidden": 32}, "distill_steps"),  # a student must be trained
        ({"finetune_steps": 5}, "finetune_steps"),
        ({"quantize": "int4"}, "variants[0].quantize"),
    ]
    for data, key in cases:
        with pytest.raises(ConfigError) as info:
            if key.startswith("variants"):
                from_dict(CompressionSpec, data, "variants[0]")
            else:
                from_dict(CompressionSpec, data)
        assert info.value.key.endswith(key), (data, info.value.key)
    ok = from_dict(CompressionSpec, {"name": "s", "student_hidden": 32, "student_layers": 1, "distill_steps": 10})
    cfg = ok.student_config(build_config("tiny", NUM_ITEMS))
    assert (cfg.hidden_size, cfg.num_layers, cfg.ffn_size, cfg.num_items) == (32, 1, 128, NUM_ITEMS)
    assert ok.describe()["compression.student_hidden"] == 32


def test_latency_harness_reports_percentiles_for_each_batch_size(make_model) -> None:
    models = {"a": make_model(), "b": make_model(seed=1, num_layers=1)}
    cfg = LatencyConfig(batch_sizes=[1, 4], seq_len=8, iters=10, warmup=1, rounds=2)
    out = measure_latencies(models, cfg)
    for name in models:
        for bs in (1, 4):
            r = {k.split("/")[1]: v for k, v in out[name].items() if k.startswith(f"b{bs}/")}
            assert r["n"] == 10 and 0 < r["p50_ms"] <= r["p99_ms"]
    assert torch.get_num_threads() == 1  # restored (the autouse fixture set 1)


def test_steps_to_schedule_covers_the_budget() -> None:
    for steps, n in [(10, 1000), (7, 50), (100, 64), (1, 1)]:
        tc = steps_to_schedule(steps, n, TRAIN)
        per_epoch = -(-n // TRAIN.batch_size)
        run = tc.epochs * min(tc.max_steps_per_epoch, per_epoch)
        assert steps <= run < steps + tc.epochs, (steps, n, tc.epochs, tc.max_steps_per_epoch)


@pytest.fixture()
def deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def _tiny(seed: int) -> SeqRecModel:
    m = SeqRecModel(build_config("tiny", NUM_ITEMS, dropout=0.1))
    init_weights_(m, seed)
    return m


def test_alpha_zero_training_run_reproduces_plain_training(prepared: Path, deterministic: None) -> None:
    """The whole loop, not one step: same weights and metrics with distillation at alpha = 0."""
    teacher = _tiny(99).eval()
    a, b = _tiny(1), _tiny(1)
    ra = train_with(a, default_loss, 6, prepared, TRAIN, EVAL)
    rb = train_with(b, distillation_loss(teacher, temperature=3.0, alpha=0.0), 6, prepared, TRAIN, EVAL)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    assert ra["test/full/ndcg@10"] == rb["test/full/ndcg@10"] and ra["global_step"] == rb["global_step"] >= 6


def test_build_variant_student_prune_finetune_int8(prepared: Path, tmp_path: Path) -> None:
    teacher = _tiny(5).eval()
    spec = CompressionSpec(
        name="s",
        student_hidden=32,
        student_layers=1,
        distill_steps=4,
        alpha=0.7,
        teacher_topk=8,
        prune="structured",
        prune_amount=0.5,
        finetune_steps=2,
        quantize="int8",
    )
    calib = calibration_batch(prepared, teacher.config.max_seq_len, n=16)
    res = build_variant(spec, teacher, prepared, TRAIN, EVAL, calib_inputs=calib)
    m = res.model
    assert m.config.hidden_size == 32 and m.config.num_layers == 1 and m.config.intermediate_size == 64
    assert isinstance(m.blocks[0].mlp.down_proj, Int8Linear)
    assert res.info["distill"]["steps"] >= 4 and res.info["prune"]["finetune_steps_run"] >= 2
    assert parameter_count(m) < 0.5 * parameter_count(teacher)
    out = save_variant(tmp_path / "v", m, list(range(NUM_ITEMS)), compression=spec.describe())
    loaded, _, meta = load_variant(out)
    x = calib[:3]
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    assert meta["compression"]["compression.prune"] == "structured" and meta["compression"]["quantization"] == "int8"


def test_magnitude_finetune_keeps_the_sparsity(prepared: Path) -> None:
    from lmrec.compression.prune import sparsity

    teacher = _tiny(5).eval()
    spec = CompressionSpec(name="m", prune="magnitude", prune_amount=0.6, finetune_steps=3)
    res = build_variant(spec, teacher, prepared, TRAIN, EVAL)
    assert sparsity(res.model) == pytest.approx(0.6, abs=1e-3)
    assert not torch.equal(res.model.item_embeddings, teacher.item_embeddings)  # it did train
