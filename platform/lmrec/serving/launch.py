"""Start the recommender app on a Ray cluster from Python (`lmrec serve`, `lmrec demo`).

The app is `lmrec.serving.app:build_app` in the installed package: every replica imports it from
its node's lmrec install, so nothing is shipped and any working directory works. `feedback_log_stats` reads the running
app's log stats across its shards.
"""

from __future__ import annotations

import os
from typing import Any

APP_NAME = "recommender"


def build_app(args: dict[str, Any]) -> Any:
    """`lmrec.serving.app:build_app(args)` (imported here, so that `lmrec` starts without Ray Serve)."""
    from lmrec.serving.app import build_app as build

    return build(args)


def ensure_ray_for_serve(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    addr = address or os.environ.get("RAY_ADDRESS")
    if addr:
        ray.init(address=addr)
    else:
        ray.init(num_cpus=num_cpus)


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


def feedback_log_stats(app_name: str = APP_NAME, flush: bool = False, timeout_s: float = 30.0) -> dict[str, Any]:
    """The app's feedback log stats summed over its shards (lmrec.serving.shards.merge_stats); with
    `flush`, every shard writes its buffered impressions first."""
    from ray import serve

    from lmrec.serving.shards import FEEDBACK_LOG, merge_stats, shard_name

    names = set(serve.status().applications[app_name].deployments)
    shards = sum(1 for name in names if name.startswith(FEEDBACK_LOG))
    handles = [serve.get_deployment_handle(shard_name(i), app_name) for i in range(shards)]
    calls = [(h.flush if flush else h.stats).remote() for h in handles]
    return merge_stats([c.result(timeout_s=timeout_s) for c in calls])
