"""jobs/benchmark_*.py stay thin: a docstring with the usage line, then `main` of one lmrec.benchmarks module."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
JOBS = sorted((ROOT / "jobs").glob("benchmark_*.py"))


def test_every_harness_has_its_job() -> None:
    assert {p.stem for p in JOBS} >= {
        "benchmark_compression",
        "benchmark_feedback_log",
        "benchmark_gpu",
        "benchmark_ope",
        "benchmark_serve",
        "benchmark_train",
    }


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.stem)
def test_job_calls_main_of_one_harness_and_parses_nothing_itself(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree) or ""
    assert f"python jobs/{path.name}" in doc, f"{path.name}: the docstring must give the usage line"
    froms = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module != "__future__"]
    assert len(froms) == 1 and (froms[0].module or "").startswith("lmrec.benchmarks."), path.name
    assert [a.name for a in froms[0].names] == ["main"], path.name
    extra = [
        n
        for n in tree.body[1:]
        if not isinstance(n, (ast.Import, ast.ImportFrom))
        and not (isinstance(n, ast.If) and "__main__" in ast.unparse(n))
    ]
    assert not extra, f"{path.name}: only imports and the __main__ guard, got {[ast.unparse(n)[:60] for n in extra]}"
    main = importlib.import_module(froms[0].module).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out
