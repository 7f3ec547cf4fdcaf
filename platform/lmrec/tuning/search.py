"""What the exploration and compression searches share: range checks of a search space, the
seeded Optuna TPE searcher, the search's MLflow run and the callback that nests every trial
under it, the Tune experiment's folder, trial rows from a ResultGrid, and the summary file.

Ray, Optuna and MLflow are imported inside functions, so configs that use `check_range`
load and validate without them.

API facts used (Ray 2.60, read from the installed source):
`ray.tune.search.optuna.OptunaSearch(space=<define-by-run fn>, metric, mode, points_to_evaluate,
sampler)` (a list metric and mode make it multi-objective), `ray.tune.search.ConcurrencyLimiter`,
`MLflowLoggerCallback(tags={"mlflow.parentRunId": ...})` (every trial run gets the tags, which
nests it under the search run; it also tags each run with `trial_name`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lmrec.config import check


def check_range(
    values: list[float], key: str, low: float, high: float | None = None, *, low_open: bool = False
) -> None:
    """`values` must be [a, b] with low <= a <= b (low < a if `low_open`) and b <= high (if given)."""
    ok = len(values) == 2 and values[0] <= values[1]
    if ok:
        ok = (values[0] > low if low_open else values[0] >= low) and (high is None or values[1] <= high)
    bound = f"{low} {'<' if low_open else '<='} low <= high" + ("" if high is None else f" <= {high}")
    check(ok, key, f"must be [low, high] with {bound}, got {values}")


# ---------------------------------------------------------------- searcher


def tpe_sampler(seed: int) -> Any:
    """Optuna's TPE sampler, seeded; it handles one objective or several (Optuna >= 4)."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def optuna_searcher(
    space: Any,
    metric: str | list[str],
    mode: str | list[str],
    seed: int,
    max_concurrent: int,
    points: list[dict[str, Any]] | None = None,
) -> Any:
    """OptunaSearch over a define-by-run `space` with the TPE sampler, `points` first,
    at most `max_concurrent` trials at once. Lists of metrics and modes: multi-objective."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        space=space, metric=metric, mode=mode, points_to_evaluate=points or None, sampler=tpe_sampler(seed)
    )
    return ConcurrencyLimiter(searcher, max_concurrent)


# ---------------------------------------------------------------- tracking and storage


class SearchTracking(Protocol):
    """The tracking settings both searches have (TrackingConfig, ExplorationTracking)."""

    tracking_uri: str | None
    experiment: str
    run_name: str | None
    parent_run_id: str | None


def tracking_uri(tr: SearchTracking) -> str:
    """The resolved MLflow tracking URI, with the search's experiment created if missing."""
    from lmrec.tracking import mlflow_utils as mt

    uri = mt.resolve_tracking_uri(tr.tracking_uri)
    mt.ensure_experiment(tr.experiment, uri)
    return uri


def start_search_run(
    tr: SearchTracking, name: str, params: Mapping[str, Any], tags: Mapping[str, str], uri: str
) -> str:
    """The search's own MLflow run (nested under `tr.parent_run_id` if set); returns its id."""
    from lmrec.tracking import mlflow_utils as mt

    return mt.start_run(
        tr.experiment, tr.run_name or name, dict(params), dict(tags), parent_run_id=tr.parent_run_id, uri=uri
    )


def trial_callback(uri: str, experiment: str, parent: str, kind: str) -> Any:
    """MLflowLoggerCallback that logs every trial as an MLflow run nested under the search run."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return MLflowLoggerCallback(
        tracking_uri=uri,
        experiment_name=experiment,
        tags={"mlflow.parentRunId": parent, "lmrec.kind": kind, "lmrec.search_run_id": parent},
    )


def trial_run_ids(parent: str, experiment: str, uri: str) -> dict[str, str]:
    """trial name -> MLflow run id, for the runs `trial_callback` nested under `parent`."""
    from lmrec.tracking import mlflow_utils as mt

    c = mt.client(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
    return {r.data.tags["trial_name"]: r.info.run_id for r in runs if r.data.tags.get("trial_name")}


def run_for_trial(trial_id: str, runs: dict[str, str]) -> str | None:
    """The MLflow run of a trial (Tune's trial names end with the trial id), if there is one."""
    for name, run_id in runs.items():
        if name.endswith(trial_id):
            return run_id
    return None


def experiment_path(name: str | None, prefix: str, storage_path: str | None) -> Path:
    """The Tune experiment's folder: `<storage_path>/<name>` (defaults: LMREC_HOME/ray_results,
    `<prefix>-<local time>`); its last part is the experiment name."""
    from lmrec.paths import default_storage_path

    root = Path(storage_path) if storage_path else default_storage_path()
    return root / (name or f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")


def write_summary(path: str | Path, doc: Any) -> Path:
    """Write a search's summary JSON (`out` of either search), creating its folder."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str))
    return out


# ---------------------------------------------------------------- trial rows


@dataclass
class TrialRecord:
    """One trial of a ResultGrid: its parameters, its last report and, if it failed, why."""

    trial_id: str
    params: dict[str, Any]
    path: str
    metrics: dict[str, Any]  # the last report, as reported
    error: str | None  # the root cause's "SomeError: message" line of a failed trial

    def numbers(self) -> dict[str, int | float]:
        """The numeric values of the last report, as reported (booleans left out)."""
        return {k: v for k, v in self.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def trial_records(grid: Any) -> list[TrialRecord]:
    """Every trial of a Tune ResultGrid, in the grid's order."""
    out = []
    for res in grid:
        m = dict(res.metrics or {})
        out.append(
            TrialRecord(
                trial_id=m.get("trial_id") or Path(str(res.path)).name,
                params=dict(res.config or {}),
                path=str(res.path),
                metrics=m,
                error=None if res.error is None else error_message(res.error),
            )
        )
    return out


def error_message(err: BaseException) -> str:
    """The root cause's "SomeError: message" line of a (Ray-wrapped) trial error."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)]
    return (causes[-1] if causes else lines[0] if lines else type(err).__name__)[:500]
