"""Where the cores go: CPU per process over a window, and py-spy on a real child process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmrec.benchmarks.serve_profile import (
    cpu_by_process,
    find_pid,
    profile_under_load,
    py_spy_path,
    summarize_folded,
)


def test_summarize_folded_counts_threads_inclusive_and_self_samples() -> None:
    text = "\n".join(
        [
            "thread (1): MainThread;run (loop.py);handle (app.py);rank (runtime.py) 6",
            "thread (1): MainThread;run (loop.py);parse (http.py) 2",
            "thread (2): forward;forward (runtime.py) 2",
            "garbage line",
        ]
    )
    s = summarize_folded(text)
    assert s["samples"] == 10
    assert s["threads"][0] == {"frame": "thread (1): MainThread", "share": 0.8}
    inclusive = {d["frame"]: d["share"] for d in s["inclusive"]}
    assert inclusive["run (loop.py)"] == 0.8 and inclusive["rank (runtime.py)"] == 0.6
    assert s["self"][0] == {"frame": "rank (runtime.py)", "share": 0.6}
    assert summarize_folded("")["samples"] == 0


def test_cpu_by_process_sees_this_process_burn_cpu() -> None:
    def burn() -> int:
        t0, n = time.process_time(), 0
        while time.process_time() - t0 < 0.4:
            n += 1
        return n

    n, cpu = cpu_by_process(burn, self_label="the burner (this process)")
    assert n > 0 and cpu["wall_s"] >= 0.4
    mine = {row["process"]: row["cores"] for row in cpu["top"]}
    assert mine.get("the burner (this process)", 0) > 0.3


@pytest.mark.skipif(py_spy_path() is None, reason="py-spy is installed with ray[default]")
def test_py_spy_profiles_a_busy_child_process(tmp_path: Path) -> None:
    code = "import time\ndef spin_here():\n    while True:\n        sum(range(1000))\nspin_here()\n"
    child = subprocess.Popen([sys.executable, "-c", code, "lmrec-profile-probe"])
    try:
        time.sleep(1.0)
        assert find_pid("lmrec-profile-probe") == child.pid
        out = profile_under_load("lmrec-profile-probe", lambda: time.sleep(2.5), 2, tmp_path / "p.folded.txt")
        assert out["py_spy"]["returncode"] == 0, out["py_spy"]["message"]  # ptrace allowed here
        assert out["summary"]["samples"] > 20
        assert any(d["frame"].startswith("spin_here") for d in out["summary"]["self"])
        assert any("python" in row["process"] and row["cores"] > 0.3 for row in out["cpu_by_process"]["top"])
    finally:
        child.kill()
        child.wait()
    assert profile_under_load("no-such-process-title-xyz", lambda: None, 1, tmp_path / "q.txt")["error"]
