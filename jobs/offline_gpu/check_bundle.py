"""Smoke check of Ray Serve from .devbundle on a machine without Ray (jobs/device/README.md).

    PYTHONPATH=platform:/tmp/site python3 jobs/device/check_bundle.py

Starts a local head the way lmrec's benchmarks do (HAProxy + throughput mode, token auth),
deploys a one-route app, sends it a request over HTTP and stops. Prints what it found and
exits non-zero on the first failure, before any GPU time goes to the benchmark.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request


def main() -> int:
    t0 = time.time()
    # Ray reads these when it is imported: set them first, for the head and this driver alike.
    os.environ.update(
        {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_AUTH_MODE": "token"}
    )
    import ray
    from ray import serve

    from lmrec.cluster.local import free_port, ray_cli, start_ray_head

    head = start_ray_head(num_cpus=2)
    try:
        ray.init(address=head.address, log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        @serve.deployment
        class Echo:
            async def __call__(self, request) -> dict:  # type: ignore[no-untyped-def]
                return {"ok": True, "body": (await request.json())}

        serve.run(Echo.bind(), name="check", route_prefix="/")
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/",
            data=json.dumps({"x": 1}).encode(),
            headers={"Content-Type": "application/json"},
        )
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    answer = json.loads(r.read())
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        assert answer == {"ok": True, "body": {"x": 1}}, answer
        print(
            json.dumps(
                {
                    "ray": ray.__version__,
                    "ray_cli": ray_cli(),
                    "python": sys.version.split()[0],
                    "resources": ray.cluster_resources(),
                    "answer": answer,
                    "seconds": round(time.time() - t0, 1),
                }
            )
        )
        return 0  # no serve.shutdown(): it waits 30 s for the controller, and head.stop() ends every process
    finally:
        ray.shutdown()
        head.stop()


if __name__ == "__main__":
    sys.exit(main())
