"""The FeedbackLog benchmark: a small run writes its table and JSON; bad arguments stop it first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrec.benchmarks.feedback_log import main


def test_small_run_prints_the_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fb.json"
    assert main(["--impressions", "60", "--candidates", "20", "--k", "5", "--rounds", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["impressions"] == 60 and result["k"] == 5 and result["impressions_per_core_second"] > 0
    assert result["join_window_bytes_per_impression"] > 0
    assert "| impressions per second of one core (best) |" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--k", "11", "--candidates", "10"]])
def test_bad_arguments_exit_2_before_any_work(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and argv[0] in capsys.readouterr().err
