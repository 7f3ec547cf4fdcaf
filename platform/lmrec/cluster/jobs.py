"""Job submission from a laptop: a thin layer over the Ray Jobs SDK (`lmrec submit/logs/status`).

`submit` validates the job's config locally first (a bad key fails here, before anything
is uploaded), then submits `python jobs/<job>.py --config <yaml> [overrides]` with the
working directory, a runtime env carrying `MLFLOW_TRACKING_URI`, and a readable
submission id, and prints the dashboard link. Secrets are never put in the runtime
env: the cluster's nodes read theirs from files or env vars (see cluster.yaml), and the
client authenticates with Ray's token (`RAY_AUTH_MODE=token`, ~/.ray/auth_token or
RAY_AUTH_TOKEN), which is not part of the job.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmrec.config import ConfigError, load_config
from lmrec.jobs_registry import CONFIG_CLASSES, config_class

JOBS_DIR = "jobs"
SECRET_PATTERN = re.compile(r"(password|secret|token|api_key|apikey)\s*=", re.IGNORECASE)


def resolve_address(address: str | None) -> str:
    """Jobs API address: --address, else RAY_ADDRESS (must be the dashboard's http URL)."""
    addr = address or os.environ.get("RAY_ADDRESS")
    if not addr:
        raise ConfigError("address", "no cluster address: pass --address http://<head>:8265 or set RAY_ADDRESS")
    if not addr.startswith(("http://", "https://")):
        addr = "http://" + addr
    return addr


def _client(address: str) -> Any:
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray >= 2.60 clusters require the token
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def check_job_args(job: str, config: str | None, overrides: Sequence[str], root: Path) -> str:
    """Validate locally; return the entrypoint command. Secrets in arguments are refused."""
    script = root / JOBS_DIR / f"{job}.py"
    if not script.exists():
        known = sorted(p.stem for p in (root / JOBS_DIR).glob("*.py"))
        raise ConfigError("job", f"unknown job {job!r}; jobs are {known}")
    for arg in overrides:
        if SECRET_PATTERN.search(arg):
            raise ConfigError(
                arg.split("=", 1)[0], "job arguments must not carry secrets; reference an env var or file"
            )
    if config:
        cfg_dir = Path(config).parent.name
        if cfg_dir in CONFIG_CLASSES:
            load_config(
                config_class(cfg_dir), root / config if not Path(config).is_absolute() else config, list(overrides)
            )
    parts = ["python", f"{JOBS_DIR}/{job}.py"] + (["--config", config] if config else []) + list(overrides)
    return " ".join(_quote(p) for p in parts)


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def submit(
    job: str,
    config: str | None = None,
    overrides: Sequence[str] = (),
    address: str | None = None,
    working_dir: str = ".",
    tracking_uri: str | None = None,
    submission_id: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """Submit a job; returns {submission_id, dashboard_url, entrypoint}."""
    root = Path(working_dir).resolve()
    entrypoint = check_job_args(job, config, overrides, root)
    addr = resolve_address(address)
    env_vars = dict(env or {})
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    note = ""
    if uri and _is_loopback(uri) and not _is_loopback(addr):
        # A laptop's tunnel (ray attach -p 5000) is not reachable from the cluster's workers:
        # leave the nodes' own MLFLOW_TRACKING_URI (cluster.yaml exports it) in charge.
        note = f"not forwarding MLFLOW_TRACKING_URI={uri} (loopback) to a remote cluster; its nodes use their own"
    elif uri:
        env_vars["MLFLOW_TRACKING_URI"] = uri
    sid = submission_id or f"lmrec-{job}-{time.strftime('%Y%m%d-%H%M%S')}"
    runtime_env: dict[str, Any] = {"working_dir": str(root), "env_vars": env_vars}
    sid = _client(addr).submit_job(
        entrypoint=entrypoint,
        runtime_env=runtime_env,
        submission_id=sid,
        metadata={"lmrec.job": job, "lmrec.config": config or ""},
    )
    return {"submission_id": sid, "dashboard_url": f"{addr}/#/jobs/{sid}", "entrypoint": entrypoint, "note": note}


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlparse

    host = urlparse(url if "://" in url else f"http://{url}").hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def status(submission_id: str | None = None, address: str | None = None) -> list[dict[str, Any]]:
    client = _client(resolve_address(address))
    infos = [client.get_job_info(submission_id)] if submission_id else client.list_jobs()
    return [
        {
            "submission_id": i.submission_id,
            "status": str(i.status),
            "entrypoint": i.entrypoint,
            "start_time": i.start_time,
            "end_time": i.end_time,
            "message": i.message,
        }
        for i in infos
    ]


def logs(submission_id: str, address: str | None = None, follow: bool = False) -> str:
    client = _client(resolve_address(address))
    if not follow:
        return client.get_job_logs(submission_id)
    import asyncio

    async def tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            print(chunk, end="", flush=True)

    asyncio.run(tail())
    return ""


def wait(submission_id: str, address: str | None = None, timeout: float = 3600, poll: float = 2.0) -> str:
    """Block until the job reaches a terminal state; return it."""
    client = _client(resolve_address(address))
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = client.get_job_status(submission_id)
        if st.is_terminal():
            return str(st)
        time.sleep(poll)
    raise TimeoutError(f"job {submission_id} still running after {timeout}s")
