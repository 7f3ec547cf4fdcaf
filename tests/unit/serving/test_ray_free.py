"""The serving logic is Ray-free: only `app`, `replica` and `launch` import Ray (the Serve wiring); the
modules they wire never do, not even inside a function, so unit tests run them in-process."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lmrec.serving

SERVING = Path(lmrec.serving.__file__).parent
RAY_FREE = [
    "ranker",
    "batcher",
    "feedback_log",
    "feedback",
    "policy_source",
    "metrics",
    "http",
    "fastpath",
    "schemas",
    "runtime",
    "cache",
    "config",
    "shards",
]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_serving_logic_never_imports_ray() -> None:
    for name in RAY_FREE:
        ray = {n for n in _imports(SERVING / f"{name}.py") if n == "ray" or n.startswith("ray.")}
        assert not ray, f"lmrec.serving.{name} imports {sorted(ray)}"
    assert {"ray", "ray.serve"} & _imports(SERVING / "app.py")  # the wiring does (this test reads imports right)


def test_importing_the_serving_logic_loads_neither_ray_nor_torch_for_the_http_side() -> None:
    """What a split topology's Ingress replica needs besides Ray: no torch (runtime loads it lazily)."""
    modules = ", ".join(f"lmrec.serving.{name}" for name in RAY_FREE if name not in ("runtime", "feedback"))
    code = f"import sys, {modules}; print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
