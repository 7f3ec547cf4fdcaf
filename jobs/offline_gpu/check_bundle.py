"""Check that Ray Serve and lmrec's serving benchmark can run here, before GPU time goes to the benchmark.

    python check_bundle.py [--requirements-only]

Run by serve_gpu.sh with the bundle's virtualenv (jobs/offline_gpu/README.md). First every
distribution that `ray[serve,default]` needs, transitively, must be installed (the host's own or the
bundle's); a missing one is named with what needs it, to add to the bundle with
`EXTRA_WHEELS`. Then it starts a local head the way lmrec's benchmarks do (HAProxy + throughput
mode, token auth), deploys a one-route app, sends it a request over HTTP and stops. Prints what it
found; exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import re
import sys
import time
import urllib.request

try:
    from packaging.requirements import Requirement
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

# What the serving benchmark imports besides Ray: lmrec's model, config and HTTP code.
BENCHMARK_MODULES = ("torch", "transformers", "safetensors", "numpy", "pyarrow", "yaml", "pydantic", "aiohttp")


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_requirements(roots: list[str]) -> tuple[list[str], list[str]]:
    """(missing, version conflicts) in the closure of `roots` (requirement strings with extras), one line each."""
    missing: list[str] = []
    conflicts: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(r), "(root)") for r in roots]
    while todo:
        req, parent = todo.pop()
        extras = frozenset(req.extras)
        if (_key(req.name), extras) in seen:
            continue
        seen.add((_key(req.name), extras))
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            missing.append(f"{req} (needed by {parent})")
            continue
        if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            conflicts.append(f"{req.name} {dist.version} does not satisfy {req} (needed by {parent})")
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append((sub, f"{dist.metadata['Name']} {dist.version}"))
    return sorted(set(missing)), sorted(set(conflicts))


def check_requirements() -> dict:
    missing, conflicts = missing_requirements(["ray[serve,default]"])
    for name in BENCHMARK_MODULES:
        try:
            __import__(name)
        except ImportError as exc:
            missing.append(f"{name} (imported by the serving benchmark: {exc})")
    for line in conflicts:
        print(f"warning: {line}", file=sys.stderr)
    if missing:
        raise SystemExit(
            "missing here, add them to the bundle (EXTRA_WHEELS='name ...' bash build_bundle.sh):\n  "
            + "\n  ".join(missing)
        )
    return {"ray": md.version("ray"), "version_warnings": len(conflicts)}


def check_serve() -> dict:
    t0 = time.time()
    # Ray reads these when it is imported: set them first, for the head and this driver alike.
    os.environ.update(
        {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_AUTH_MODE": "token"}
    )
    import ray
    from ray import serve

    import lmrec.benchmarks.serve  # noqa: F401 (the benchmark and its imports load here)
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
        # no serve.shutdown(): it waits 30 s for the controller, and head.stop() ends every process
        return {
            "ray_cli": ray_cli(),
            "resources": ray.cluster_resources(),
            "answer": answer,
            "seconds": round(time.time() - t0, 1),
        }
    finally:
        ray.shutdown()
        head.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check Ray Serve and the serving benchmark's imports here.")
    p.add_argument("--requirements-only", action="store_true", help="skip starting Ray")
    args = p.parse_args(argv)
    out = {"python": sys.version.split()[0], **check_requirements()}
    if not args.requirements_only:
        out.update(check_serve())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
