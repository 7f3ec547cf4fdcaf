"""Start the recommender app on a Ray cluster from Python (`lmrec serve`, `lmrec demo`).

`serve_apps/` sits beside `platform/` in the repository, not inside the installed
package, so it is shipped to the replicas as a `py_modules` entry of the runtime env —
what running `serve run serve_apps/recommender.yaml` from the repo root does.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

APP_NAME = "recommender"


def repo_root() -> Path:
    import lmrec

    return Path(lmrec.__file__).resolve().parents[2]


def serve_apps_dir() -> Path:
    path = repo_root() / "serve_apps"
    if not (path / "recommender.py").exists():
        raise FileNotFoundError(f"{path}/recommender.py not found: run lmrec from a checkout of the repository")
    return path


def build_app(args: dict[str, Any]) -> Any:
    """`serve_apps.recommender:build_app(args)`, importable from any working directory."""
    root = str(repo_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module("serve_apps.recommender")
    return module.build_app(args)


def ensure_ray_for_serve(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join (or start) Ray with serve_apps/ shipped to every worker."""
    import os

    import ray

    if ray.is_initialized():
        return
    runtime_env = {"py_modules": [str(serve_apps_dir())]}
    addr = address or os.environ.get("RAY_ADDRESS")
    if addr:
        ray.init(address=addr, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=num_cpus, runtime_env=runtime_env)


def start(
    args: dict[str, Any], host: str = "127.0.0.1", port: int = 8000, blocking: bool = False, address: str | None = None
) -> str:
    """Deploy (or update) the app; returns its base URL."""
    from ray import serve

    app = build_app(args)  # validates args before anything is deployed
    ensure_ray_for_serve(address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=blocking)
    return f"http://{host}:{port}"
