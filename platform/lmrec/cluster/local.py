"""Local real services on loopback: a Ray head (`ray start --head`) and an MLflow server.

Used by the integration tests (one of each per session) and by benchmarks that need
several differently configured clusters in one run. Teardown kills only the processes
of the head it started (matched by its own temp dir), never other Ray instances.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def ray_cli() -> list[str]:
    """The `ray` command: this interpreter's console script, or `python -m` where Ray sits on
    PYTHONPATH without one."""
    script = BIN / "ray"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


def free_port(low: int = 20000, high: int = 60000) -> int:
    """A free TCP port on loopback, outside Ray's default worker range (10002-19999)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if low <= port < high:
            return port
    raise RuntimeError("no free port found")


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    last: Exception | None = None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while waiting for {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:  # answering at all (401 without a token) means it is up
            if exc.code < 500:
                return
            last = exc
        except Exception as exc:  # noqa: BLE001 (still starting)
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout}s: {last}")


@dataclass
class MlflowServer:
    uri: str
    proc: subprocess.Popen
    root: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def start_mlflow_server(root: Path) -> MlflowServer:
    """`mlflow server` with a SQLite store and served artifacts, on a free loopback port."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = open(root / "mlflow-server.log", "wb")
    # MLflow 3 starts a job runner with several huey worker processes for its GenAI jobs;
    # lmrec uses none of them, and on a small machine they cost real CPU.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    uri = f"http://127.0.0.1:{port}"
    server = MlflowServer(uri, proc, root)
    try:
        wait_http(f"{uri}/health", timeout=300, proc=proc)
    except BaseException:
        server.stop()  # never leave a half-started server behind
        raise
    return server


@dataclass
class RayHead:
    address: str  # GCS address for ray.init
    dashboard_url: str  # Jobs API / dashboard
    temp_dir: str
    port: int
    metrics_port: int = 0  # the head's Prometheus endpoint: http://127.0.0.1:<metrics_port>/metrics

    def stop(self) -> None:
        stop_ray_head(self.temp_dir, gcs_port=self.port)


def ensure_auth_token(env: dict[str, str]) -> None:
    """With token auth (`RAY_AUTH_MODE=token`), `ray start --head` refuses to start until a token
    exists, unlike `ray.init()`, which creates one. On a fresh machine, create it the way Ray's docs
    say for local development (`ray get-auth-token --generate`: ~/.ray/auth_token, only if there
    is none yet). The token is printed on stdout, which is captured and dropped."""
    if env.get("RAY_AUTH_MODE", "").lower() != "token" or env.get("RAY_AUTH_TOKEN"):
        return
    path = env.get("RAY_AUTH_TOKEN_PATH")
    if path and Path(path).expanduser().is_file():
        return
    out = subprocess.run(
        [*ray_cli(), "get-auth-token", "--generate"], env=env, capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(f"could not create a Ray auth token (ray get-auth-token --generate):\n{out.stderr}")


def start_ray_head(num_cpus: int = 4, env: dict[str, str] | None = None) -> RayHead:
    """`ray start --head` on loopback with its own temp dir (so teardown kills only it)."""
    port = free_port()
    dash = free_port()
    metrics_port = free_port()
    # A short path: Ray's unix socket paths must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="lr", dir="/tmp")
    cmd = [
        *ray_cli(),
        "start",
        "--head",
        f"--port={port}",
        f"--dashboard-port={dash}",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}",
        f"--ray-client-server-port={free_port()}",
        f"--metrics-export-port={metrics_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        "--disable-usage-stats",
    ]
    env = dict(env if env is not None else os.environ)
    # Job drivers run `python ...` from the head's environment: the project's venv, as on a cluster node.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # Every process of this cluster (actors, job drivers) names it when it looks for "the" cluster: Ray
    # code that auto-detects (Tune's placement-group cleaner, the state API) fails when two Ray instances
    # run on one machine and nothing says which is theirs.
    env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    ensure_auth_token(env)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        stop_ray_head(temp_dir)
        raise RuntimeError(f"ray start failed:\n{out.stdout}\n{out.stderr}")
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_http(f"{url}/api/version", timeout=300)
    except BaseException:
        stop_ray_head(temp_dir)
        raise
    return RayHead(f"127.0.0.1:{port}", url, temp_dir, port, metrics_port)


def stop_ray_head(temp_dir: str, gcs_port: int | None = None) -> None:
    """Kill every process of the head started with `temp_dir` (and their children).

    The Ray client server names only the GCS address, not the temp dir: with `gcs_port` it
    is matched by `--address=<host>:<gcs_port>` (it would otherwise outlive the head).
    """
    import psutil

    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}  # never this process or its shell
    procs = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.info["pid"] in spared:
            continue
        try:
            cmd = p.info["cmdline"] or []
            if any(temp_dir in part for part in cmd) or (
                gcs_port and any(part.startswith("--address=") and part.endswith(f":{gcs_port}") for part in cmd)
            ):
                procs.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    family = set()
    for p in procs:
        family.add(p)
        try:
            family.update(p.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    family = {p for p in family if p.pid not in spared}
    for p in family:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(family), timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    shutil.rmtree(temp_dir, ignore_errors=True)
