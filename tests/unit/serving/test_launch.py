"""The app builds from the installed package alone: from any working directory, with no checkout on the
path (what `lmrec serve` and `lmrec demo` need), and `serve_apps.recommender` is the same builder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lmrec

PLATFORM = Path(lmrec.__file__).resolve().parents[1]  # the folder holding the lmrec package
ROOT = PLATFORM.parent


def test_build_app_from_any_working_directory(tmp_path: Path) -> None:
    code = (
        "import importlib.util\n"
        "from lmrec.config import ConfigError\n"
        "from lmrec.serving import launch\n"
        "app = launch.build_app({'model_uri': 'models:/m@champion', 'topology': 'fused'})\n"
        "print(type(app).__name__, launch.APP_NAME)\n"
        "try:\n"
        "    launch.build_app({'batch': {'max_batch_size': 0}})\n"
        "except ConfigError as exc:\n"
        "    print(exc.key)\n"
        "print(importlib.util.find_spec('serve_apps') is None)\n"  # no checkout on the path
    )
    env = {**os.environ, "PYTHONPATH": str(PLATFORM)}  # the package only: no repository root, no serve_apps
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["Application", "recommender", "batch.max_batch_size", "True"], out.stdout


def test_serve_apps_recommender_re_exports_the_package_builder() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from serve_apps.recommender import build_app

        from lmrec.serving.app import build_app as packaged
    finally:
        sys.path.remove(str(ROOT))
    assert build_app is packaged
    assert "import_path: lmrec.serving.app:build_app" in (ROOT / "serve_apps" / "recommender.yaml").read_text()
