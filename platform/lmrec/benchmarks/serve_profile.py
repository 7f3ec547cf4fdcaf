"""Where the cores go under load: CPU seconds per process, and a py-spy profile of one replica.

`cpu_by_process` diffs every process's CPU time over a window (a `top` over the load). `PySpy` records
the replica's Python stacks (sampling, `--nonblocking`: the replica is not paused) in the collapsed
format that flamegraph.pl and speedscope read, and `summarize_folded` turns them into a top-like table.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil


def _cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _label(p: psutil.Process, self_label: str) -> str:
    try:
        cmd = p.cmdline()
    except (psutil.Error, OSError):
        return p.name()
    if p.pid == psutil.Process().pid:
        return self_label
    if not cmd:
        return p.name()
    first = Path(cmd[0]).name
    if first.startswith("ray::") or first in ("haproxy", "raylet", "gcs_server", "py-spy"):
        return first
    return " ".join([first, *[Path(c).name if "/" in c else c for c in cmd[1:3]]])[:80]


def cpu_by_process(
    work: Callable[[], Any], top: int = 12, self_label: str = "load generator (this process)"
) -> tuple[Any, dict[str, Any]]:
    """Run `work()` and report the CPU each process used meanwhile, in cores (CPU seconds / wall seconds)."""

    def snapshot() -> dict[int, tuple[str, float]]:
        out = {}
        for p in psutil.process_iter():
            try:
                out[p.pid] = (_label(p, self_label), _cpu_seconds(p))
            except (psutil.Error, OSError):
                continue
        return out

    before, t0 = snapshot(), time.perf_counter()
    result = work()
    after, wall = snapshot(), time.perf_counter() - t0
    used: Counter[str] = Counter()
    for pid, (label, cpu) in after.items():
        used[label] += max(0.0, cpu - before.get(pid, (label, 0.0))[1])
    total = sum(used.values())
    rows = [{"process": k, "cores": round(v / wall, 3)} for k, v in used.most_common(top) if v > 0]
    return result, {"wall_s": round(wall, 2), "cores_total": round(total / wall, 3), "top": rows}


def find_pid(title_part: str) -> int | None:
    """The pid of the one process whose command line (a Ray worker's title) contains `title_part`."""
    for p in psutil.process_iter():
        try:
            if any(title_part in c for c in p.cmdline()):
                return p.pid
        except (psutil.Error, OSError):
            continue
    return None


def py_spy_path() -> str | None:
    """py-spy beside this interpreter (installed with Ray), else on PATH."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


class PySpy:
    """`py-spy record` of one pid for `seconds`, collapsed stacks with thread names, written to `out`."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 50) -> None:
        exe = py_spy_path()
        if exe is None:
            raise FileNotFoundError("py-spy")
        self.out = out
        cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate)]
        cmd += ["--format", "raw", "--nolineno", "--threads", "--nonblocking", "--output", str(out)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(self, timeout: float = 120) -> dict[str, Any]:
        """py-spy's exit status and last message; ptrace refused (no CAP_SYS_PTRACE) shows up here."""
        text, _ = self.proc.communicate(timeout=timeout)
        return {"returncode": self.proc.returncode, "message": text.strip()[-500:], "file": str(self.out)}


def summarize_folded(text: str, top: int = 15) -> dict[str, Any]:
    """Samples per thread, and the functions with the most samples on the stack (inclusive) and at its top (self)."""
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread, frames = (frames[0], frames[1:]) if frames[0].startswith(("thread ", "process ")) else ("", frames)
        total += n
        threads[thread] += n
        for f in set(frames):
            inclusive[f] += n
        if frames:
            leaf[frames[-1]] += n

    def share(c: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": k, "share": round(v / total, 3)} for k, v in c.most_common(top)] if total else []

    return {"samples": total, "threads": share(threads), "inclusive": share(inclusive), "self": share(leaf)}


def profile_under_load(title_part: str, load: Callable[[], Any], seconds: float, out: Path) -> dict[str, Any]:
    """py-spy on the process titled `title_part` for `seconds` while `load()` runs, with CPU per process.

    `load` must outlast `seconds`. The profile is saved as collapsed stacks at `out` and summarised.
    """
    pid = find_pid(title_part)
    if pid is None:
        return {"error": f"no process has {title_part!r} in its command line"}
    try:
        spy = PySpy(pid, seconds, out)
    except FileNotFoundError:
        _, cpu = cpu_by_process(load)
        return {"pid": pid, "error": "py-spy not found", "cpu_by_process": cpu}
    _, cpu = cpu_by_process(load)
    status = spy.wait()
    summary = summarize_folded(out.read_text()) if out.exists() else None
    return {
        "pid": pid,
        "title": title_part,
        "seconds": seconds,
        "py_spy": status,
        "summary": summary,
        "cpu_by_process": cpu,
    }
