"""Test access to the local-service helpers (they live in lmrec.cluster.local)."""

from lmrec.cluster.local import (  # noqa: F401 (re-exported for the tests)
    MlflowServer,
    RayHead,
    free_port,
    start_mlflow_server,
    start_ray_head,
    stop_ray_head,
    wait_http,
)

# The model the integration session trains once and registers as SERVE_MODEL@champion
# (tests/integration/conftest.py). Kept here, not in a conftest: with unit and integration tests
# in one run, `import conftest` would find whichever conftest module was loaded first.
SERVE_MODEL = "it-serve-seqrec"
