"""The FeedbackLog benchmark: a small run (1 and 2 shard processes) writes its table and JSON; bad
arguments stop it first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrec.benchmarks.feedback_log import main


def test_small_run_prints_the_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fb.json"
    argv = ["--impressions", "60", "--candidates", "20", "--k", "5", "--rounds", "1", "--shards", "1,2"]
    assert main([*argv, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["impressions"] == 60 and result["k"] == 5 and result["impressions_per_core_second"] > 0
    assert result["join_window_bytes_per_impression"] > 0
    assert set(result["sharded_ingest"]) == {"1", "2"}  # each shard count ran (every slate logged once: checked inside)
    assert all(
        v["slates_per_s"]["best"] > 0 and v["cpu_us_per_slate"]["best"] > 0 for v in result["sharded_ingest"].values()
    )
    printed = capsys.readouterr().out
    assert "| impressions per second of one core (best) |" in printed and "| 2 | " in printed


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--k", "11", "--candidates", "10"], ["--shards", "1,0"]])
def test_bad_arguments_exit_2_before_any_work(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and argv[0] in capsys.readouterr().err
