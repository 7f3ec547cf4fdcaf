"""Typed config of MLflow tracking and registration."""

from __future__ import annotations

from lmrec.config import ConfigModel, check


class TrackingConfig(ConfigModel):
    """Where runs go and how the trained model is registered.

    `tracking_uri` None means MLFLOW_TRACKING_URI, else SQLite under LMREC_HOME.
    """

    tracking_uri: str | None = None
    experiment: str = "lmrec"
    run_name: str | None = None
    run_id: str | None = None  # set by the driver; workers log into this run
    parent_run_id: str | None = None  # nests this run under another (pipelines, searches)
    register: bool = True
    model_name: str = "lmrec-seqrec"
    alias: str = "candidate"

    def validate_config(self) -> None:
        check(bool(self.experiment), "experiment", "must not be empty")
        check(bool(self.model_name), "model_name", "must not be empty")
        check(self.alias.replace("-", "").replace("_", "").isalnum(), "alias", f"invalid alias {self.alias!r}")
