"""The serving benchmark without a cluster: medians over rounds, and arguments refused before any work."""

from __future__ import annotations

import pytest
import torch

from lmrec.benchmarks.serve import main
from lmrec.benchmarks.serve_report import median_cells


def test_serving_benchmark_takes_cell_wise_medians_over_rounds() -> None:
    def cell(rps: float, p99: float, errors: int = 0) -> dict:
        return {
            "requests": 10,
            "errors": errors,
            "seconds": 1.0,
            "req_per_s": rps,
            "p50_ms": 1.0,
            "p95_ms": 2.0,
            "p99_ms": p99,
            "statuses": {"200": 10},
        }

    rounds = [
        {"batching_on": {"c1": cell(10, 5), "c64": {**cell(100, 50), "rows_per_forward_mean": 20.0}}},
        {"batching_on": {"c1": cell(30, 1), "c64": {**cell(80, 70, errors=1), "rows_per_forward_mean": 30.0}}},
        {"batching_on": {"c1": cell(20, 9), "c64": {**cell(90, 60), "rows_per_forward_mean": 25.0}}},
    ]
    med = median_cells(rounds)
    assert (
        med["batching_on"]["c64"]["rows_per_forward_mean"] == 25.0
        and "rows_per_forward_mean" not in med["batching_on"]["c1"]
    )
    assert med["batching_on"]["c1"]["req_per_s"] == 20 and med["batching_on"]["c1"]["p99_ms"] == 5
    assert med["batching_on"]["c64"]["req_per_s"] == 90 and med["batching_on"]["c64"]["p99_ms"] == 60
    assert med["batching_on"]["c64"]["errors"] == 1 and med["batching_on"]["c64"]["rounds"] == 3


def test_serving_benchmark_refuses_bad_arguments_before_starting_anything(capsys: pytest.CaptureFixture[str]) -> None:
    bad = [["--variants", "nope"], ["--gpus", "-1"], ["--ceiling-rounds", "0"], ["--open-loop", "0.5,2"]] + (
        [] if torch.cuda.is_available() else [["--gpus", "1"]]
    )
    for argv in bad:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert argv[0] in capsys.readouterr().err
