"""MLflow: tracking URI resolution, runs, metrics, artifacts, registry and aliases.

Default store: SQLite at `LMREC_HOME/mlflow.db` with artifacts in
`LMREC_HOME/mlartifacts`. `MLFLOW_TRACKING_URI` (or a config value) overrides it;
an `http://` URI points at a tracking server. Models are registered from plain
safetensors/JSON artifact folders (`runs:/<run>/model`), never as pickled flavors.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmrec.paths import lmrec_home

log = logging.getLogger(__name__)

MODEL_ARTIFACT_PATH = "model"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit URI, else MLFLOW_TRACKING_URI, else SQLite under LMREC_HOME."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{lmrec_home() / 'mlflow.db'}"


def default_artifact_root() -> str:
    path = lmrec_home() / "mlartifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def client(uri: str | None = None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_uri(uri))


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """Experiment id for `name`, creating it (with a local artifact root for file stores)."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    resolved = resolve_tracking_uri(uri)
    location = None if resolved.startswith(("http://", "https://", "databricks")) else default_artifact_root()
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def start_run(
    experiment: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    uri: str | None = None,
) -> str:
    """Create a run (nested under `parent_run_id` if given), log params and tags; return its id."""
    from mlflow.entities import Param, RunTag

    c = client(uri)
    exp_id = ensure_experiment(experiment, uri)
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = c.create_run(exp_id, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    if params:
        plist = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for chunk in _chunks(plist, 100):
            c.log_batch(run_id, params=chunk)
    if tags:
        c.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    return run_id


class RunLogger:
    """Log into one existing run from any process (rank 0 of a Ray Train worker group)."""

    def __init__(self, run_id: str, uri: str | None = None) -> None:
        self.run_id = run_id
        self.uri = resolve_tracking_uri(uri)
        self.client = client(self.uri)

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        ms = [Metric(_metric_key(k), float(v), now, step or 0) for k, v in values.items() if _is_number(v)]
        for chunk in _chunks(ms, 1000):
            self.client.log_batch(self.run_id, metrics=chunk)

    def history(self, series: Mapping[str, Sequence[float]], steps: Sequence[int]) -> None:
        """Whole metric curves in few calls: series[key][i] is logged at step steps[i]."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        ms = [
            Metric(_metric_key(k), float(v), now, int(st)) for k, vals in series.items() for st, v in zip(steps, vals)
        ]
        for chunk in _chunks(ms, 1000):
            self.client.log_batch(self.run_id, metrics=chunk)

    def params(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        plist = [Param(str(k), str(v)[:6000]) for k, v in values.items()]
        for chunk in _chunks(plist, 100):
            self.client.log_batch(self.run_id, params=chunk)

    def tags(self, values: Mapping[str, Any]) -> None:
        for k, v in values.items():
            self.client.set_tag(self.run_id, k, str(v))

    def artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def json(self, data: Any, name: str) -> None:
        self.client.log_dict(self.run_id, data, name)

    def text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def figure(self, fig: Any, name: str) -> None:
        self.client.log_figure(self.run_id, fig, name)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def _metric_key(key: str) -> str:
    # MLflow keys allow [A-Za-z0-9_\-. /]; '@' (hr@10) is not allowed -> '_at_'.
    return key.replace("@", "_at_")


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def register_model(
    run_id: str,
    name: str,
    alias: str | None = None,
    artifact_path: str = MODEL_ARTIFACT_PATH,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    uri: str | None = None,
    model_description: str = "lmrec sequential recommender (safetensors + JSON)",
) -> str:
    """Register `runs:/<run_id>/<artifact_path>` as a new version of `name`; optionally alias it.

    `model_description` describes the registered model when this call creates it."""
    c = client(uri)
    try:
        c.get_registered_model(name)
    except Exception:  # noqa: BLE001 (any lookup failure: try to create it; a real error resurfaces there)
        try:
            c.create_registered_model(name, description=model_description)
        except Exception:  # noqa: BLE001 (created concurrently: the lookup below raises if not)
            c.get_registered_model(name)
    mv = c.create_model_version(
        name,
        source=f"runs:/{run_id}/{artifact_path}",
        run_id=run_id,
        tags={k: str(v) for k, v in (tags or {}).items()},
        description=description,
    )
    if alias:
        c.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)


def set_alias(name: str, alias: str, version: str | int, uri: str | None = None) -> None:
    client(uri).set_registered_model_alias(name, alias, str(version))


def version_by_alias(name: str, alias: str, uri: str | None = None) -> Any:
    return client(uri).get_model_version_by_alias(name, alias)


def promote(name: str, from_alias: str, to_alias: str, uri: str | None = None) -> str:
    """Point `to_alias` at the version `from_alias` points at (e.g. candidate -> champion)."""
    mv = version_by_alias(name, from_alias, uri)
    set_alias(name, to_alias, mv.version, uri)
    return str(mv.version)


def resolve_model_version(model_uri: str, uri: str | None = None) -> dict[str, Any]:
    """For `models:/name@alias` or `models:/name/3`: {name, version, run_id, source}."""
    c = client(uri)
    if not model_uri.startswith("models:/"):
        return {"name": None, "version": None, "run_id": None, "source": model_uri}
    rest = model_uri[len("models:/") :]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        mv = c.get_model_version_by_alias(name, alias)
    else:
        name, version = rest.rsplit("/", 1)
        mv = c.get_model_version(name, version)
    return {"name": name, "version": str(mv.version), "run_id": mv.run_id, "source": mv.source}


def download_model(model_uri: str, dst: str | Path | None = None, uri: str | None = None) -> Path:
    """Local folder holding the artifact of `models:/...`, `runs:/...` or a path."""
    if os.path.isdir(model_uri):  # a folder needs no MLflow (a replica on a machine without it can serve one)
        return Path(model_uri)
    import mlflow

    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="lmrec-model-"))
    mlflow.set_tracking_uri(resolve_tracking_uri(uri))
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst))
    return Path(local)
