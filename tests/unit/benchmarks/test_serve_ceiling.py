"""The serving benchmark's ceiling on a tiny model in-process: warm-up to a steady per-call time,
alternating rounds over thread counts and both last-block forms, and both ratios with their status."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest
import torch

from lmrec.benchmarks.serve_ceiling import (
    ceiling_rounds,
    default_threads,
    machine_best,
    replica_view,
    round_order,
)
from lmrec.benchmarks.serve_model import warm_until_stable
from lmrec.benchmarks.serve_report import ceiling_status, ratios
from lmrec.models import SeqRecModel, build_config, init_weights_
from lmrec.models.artifacts import save_model_dir

ITEMS = list(range(101, 141))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = SeqRecModel(build_config("tiny", len(ITEMS), dropout=0.0))
    init_weights_(model, 0)
    return save_model_dir(tmp_path_factory.mktemp("ceiling") / "m", model.config, model.state_dict(), ITEMS, {})


def test_round_order_alternates_blocks_and_threads_and_reverses_every_round() -> None:
    first, second = round_order(["a", "b"], [1, 2], 0), round_order(["a", "b"], [1, 2], 1)
    assert first == [("a", 1), ("b", 1), ("a", 2), ("b", 2)] and second == first[::-1]
    assert round_order(["a", "b"], [1, 2], 2) == first
    assert default_threads(2, 2) == [1, 2] and default_threads(1, 8) == [1, 8] and default_threads(4, 8) == [1, 4, 8]


def test_warm_up_runs_until_the_per_call_time_settles() -> None:
    def settles(i: int) -> None:  # a compiled forward's first calls are slow
        time.sleep(0.02 if i < 4 else 0.002)

    warm = warm_until_stable(settles, min_calls=6, max_calls=40, window=3, tol=0.5)
    assert warm["stable"] and 6 <= warm["calls"] < 40 and warm["first_ms"] > 3 * warm["last_ms"]

    def never(i: int) -> None:  # alternates slow and fast windows: never two alike
        time.sleep(0.02 if (i // 3) % 2 else 0.001)

    warm = warm_until_stable(never, min_calls=6, max_calls=18, window=3, tol=0.1)
    assert not warm["stable"] and warm["calls"] == 18


def test_ceiling_rounds_measure_every_configuration_every_round(model_dir: Path) -> None:
    bodies = [{"history": ITEMS[i : i + 3 + i % 7], "k": 5} for i in range(20)]
    c = ceiling_rounds(model_dir, bodies, batch=4, threads=[1], rounds=2, device="cpu", min_seconds=0.02)
    assert set(c["configs"]) == {"last_position_t1", "full_last_block_t1"} and c["device"] == "cpu"
    assert c["order"] == [["last_position_t1", "full_last_block_t1"], ["full_last_block_t1", "last_position_t1"]]
    for cfg in c["configs"].values():
        for bs in ("batch_1", "batch_4"):
            cell = cfg[bs]
            assert len(cell["per_round"]) == 2 and cell["min"] <= cell["median"] <= cell["max"] and cell["min"] > 0
    assert all(w["batch_1"]["calls"] >= 10 for w in c["warmup"].values())
    best = machine_best(c, 4)
    assert best["req_per_s"] == max(cfg["batch_4"]["median"] for cfg in c["configs"].values())
    view = replica_view(c, "last_position", 1)
    assert view["last_position_only"] and view["threads"] == 1
    assert view["batch_4"]["req_per_s"] == c["configs"]["last_position_t1"]["batch_4"]["median"]


def test_both_ceiling_ratios_and_the_status_of_the_stricter() -> None:
    def cell(rps: float, p50: float = 10.0, p99: float = 50.0) -> dict:
        return {"req_per_s": rps, "p50_ms": p50, "p99_ms": p99}

    r = {
        "raw_forward": {"batch_64": {"req_per_s": 200.0, "min": 180.0, "max": 220.0}},
        "raw_ceiling": {"machine_best": {"req_per_s": 400.0, "min": 380.0, "max": 440.0}},
        "fastapi_peer": {"batching_on": {"c64": cell(150.0)}},
        "v": {
            "batching_on": {"c64": cell(160.0)},
            "batching_off": {"c64": cell(80.0)},
            "cache_hit": cell(1, p50=1.0),
            "cache_miss": cell(1, p50=10.0),
        },
    }
    q = ratios(r, argparse.Namespace(levels=[1, 64], batch=64, variants=["v"]))["v"]
    assert q["vs_raw_ceiling"] == 0.8 and q["vs_machine_ceiling"] == 0.4
    assert q["vs_raw_ceiling_range"] == [round(160 / 220, 3), round(160 / 180, 3)]
    assert q["vs_machine_ceiling_range"] == [round(160 / 440, 3), round(160 / 380, 3)]
    assert ceiling_status(q["vs_machine_ceiling"], q["vs_machine_ceiling_range"]) == "missed"
    assert ceiling_status(q["vs_raw_ceiling"], q["vs_raw_ceiling_range"]) == "met"
    assert ceiling_status(0.62, [0.55, 0.7]) == "not significant"
    assert ceiling_status(0.58, [0.55, 0.61]) == "not significant"
