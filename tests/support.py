"""Test access to the local-service helpers (they live in lmrec.cluster.local)."""

from lmrec.cluster.local import (  # noqa: F401
    MlflowServer, RayHead, free_port, start_mlflow_server, start_ray_head, stop_ray_head, wait_http,
)
