"""The replica-kill harness's bookkeeping: which failures were in flight at the kill, and the summary."""

from __future__ import annotations

import pytest

from lmrec.benchmarks.replica_kill import KillRun, main


def test_failures_are_split_by_whether_they_started_before_the_kill() -> None:
    run = KillRun(
        starts_s=[0.5, 2.9, 3.0, 3.2, 6.0],
        latencies_ms=[10.0, 900.0, 12.0, 40.0, 11.0],
        statuses=[200, 500, 200, -1, 200],
        killed_at_s=3.1,
        recovered_after_s=20.04,
    )
    s = run.summary()
    assert (s["requests"], s["failed"], s["failed_started_before_kill"]) == (5, 2, 1)
    assert s["statuses"] == {"-1": 1, "200": 3, "500": 1}
    assert s["worst_ms"] == 900.0 and s["recovered_after_s"] == 20.0


def test_bad_arguments_are_refused_before_any_cluster_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--topologies", "split,ring"])
    assert exc.value.code == 2
    assert "--topologies" in capsys.readouterr().err
