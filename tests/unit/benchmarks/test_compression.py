"""The benchmark harness end to end on a tiny synthetic setup, and its target verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrec.benchmarks.compression import BenchmarkConfig, main, retime_saved, run_benchmark
from lmrec.benchmarks.compression_report import check_targets, format_table
from lmrec.compression.spec import CompressionSpec
from lmrec.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[3]


def _row(name: str, params: int, ndcg: float, b1: float, b64: float) -> dict:
    return {
        "variant": name,
        "params": params,
        "params_ratio": params / 1000,
        "test/full/ndcg@10": ndcg,
        "b1/p50_ms": b1,
        "b64/p50_ms": b64,
    }


def test_target_verdicts() -> None:
    specs = {
        "s": CompressionSpec(name="s", student_hidden=8, distill_steps=1),
        "s-big": CompressionSpec(name="s-big", student_layers=1, distill_steps=1),
        "s-plain": CompressionSpec(name="s-plain", student_hidden=8, distill_steps=1, alpha=0.0),  # not distilled
        "q": CompressionSpec(name="q", quantize="int8"),
        "p": CompressionSpec(name="p", prune="structured", prune_amount=0.5),
        "p-q": CompressionSpec(name="p-q", prune="structured", prune_amount=0.5, quantize="int8"),  # mixed: no verdict
    }
    rows = [
        _row("teacher", 1000, 0.20, 10.0, 100.0),
        _row("s", 200, 0.195, 3.0, 20.0),
        _row("s-big", 400, 0.2, 5.0, 50.0),
        _row("s-plain", 200, 0.2, 3.0, 20.0),
        _row("q", 1000, 0.197, 6.0, 45.0),
        _row("p", 550, 0.15, 7.0, 60.0),
        _row("p-q", 550, 0.15, 4.0, 30.0),
    ]
    verdicts = {v["variant"]: v for v in check_targets(rows, specs, [1, 64])}
    assert set(verdicts) == {"s", "s-big", "q", "p"}
    assert verdicts["s"]["met"] and not verdicts["s-big"]["met"]  # 40% of the params is over the 25% budget
    assert not verdicts["q"]["met"] and verdicts["q"]["speedup_p50"]["b1"] == pytest.approx(10 / 6)  # 1.7x < 2x
    assert verdicts["p"]["met"]  # faster, whatever the quality


def test_benchmark_config_validation() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BenchmarkConfig, None, [])
    assert info.value.key == "variants"
    with pytest.raises(ConfigError) as info:
        load_config(BenchmarkConfig, None, ["variants=[{name: teacher}]"])
    assert info.value.key == "variants"
    with pytest.raises(ConfigError) as info:
        load_config(BenchmarkConfig, None, ["variants=[{name: a, prune: sparse}]"])
    assert info.value.key == "variants[0].prune"


def test_main_exits_2_on_a_config_error_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(ROOT / "jobs/configs/benchmark_compression/synthetic.yaml")
    assert main(["--config", config, "--out", str(tmp_path / "x.json"), "latency.nope=1"]) == 2
    assert "config error" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_benchmark_runs_end_to_end_on_synthetic_data(tmp_path: Path) -> None:
    cfg = load_config(
        BenchmarkConfig,
        ROOT / "jobs/configs/benchmark_compression/synthetic.yaml",
        [
            "data.synthetic.num_users=150",
            "data.synthetic.num_items=60",
            "teacher.train.epochs=1",
            "latency.iters=3",
            "latency.rounds=1",
            "latency.warmup=1",
            "calibration_rows=16",
            f"out_dir={tmp_path}",
            "variants=[{name: st, student_hidden: 16, student_layers: 1, distill_steps: 2}, {name: q, quantize: int8}, "
            "{name: p, prune: structured, prune_amount: 0.5}]",
        ],
    )
    result = run_benchmark(cfg, tmp_path / "out.json")
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["teacher", "st", "q", "p"]
    for r in rows.values():
        assert r["params"] > 0 and r["bytes"] > 0 and 0.0 <= r["test/full/ndcg@10"] <= 1.0
        assert r["b1/p50_ms"] > 0 and r["b64/p99_ms"] >= r["b64/p50_ms"]
    assert rows["q"]["bytes"] < rows["teacher"]["bytes"] and rows["p"]["params"] < rows["teacher"]["params"]
    assert (tmp_path / "variants" / "q" / "model.safetensors").exists()
    assert json.loads((tmp_path / "out.json").read_text())["rows"][0]["variant"] == "teacher"
    assert {t["variant"] for t in result["targets"]} == {"st", "q", "p"}
    table = format_table(result)
    assert table.count("\n| ") == 4  # one line per model (the header opens the string, the separator is "|---")
    assert table.count("\n- MET") + table.count("\n- MISSED") == 3

    again = retime_saved(cfg, tmp_path / "out.json")  # re-time the saved artifacts, as serving loads them
    assert again["retimed_from_artifacts"] and [r["variant"] for r in again["rows"]] == list(rows)
    assert again["rows"][2]["test/full/ndcg@10"] == rows["q"]["test/full/ndcg@10"] and again["rows"][2]["b1/p50_ms"] > 0
