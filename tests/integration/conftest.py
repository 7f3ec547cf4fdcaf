"""One real MLflow server and one real Ray head (`ray start --head`) per session.

Every integration test shares them: a Ray start costs seconds on 2 cores, so the
suite starts one cluster and one tracking server and reuses them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support import SERVE_MODEL, MlflowServer, RayHead, start_mlflow_server, start_ray_head

# Ray Data (2.60, datasource V2) reads Parquet footers on a pool of RAY_DATA_PARQUET_FOOTER_NUM_ACTORS
# actors (default 32) that every `read_parquet` starts and kills: 32 new worker processes cost ~10 s per
# read on 2 cores, for the few small files a test reads. Set for the session before the head starts, so
# the head, job drivers and Tune trials inherit it (it is read on the driver that plans the read).
os.environ.setdefault("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "1")

RAY_NUM_CPUS = 6  # oversubscribes 2 real cores on purpose: trainers, Tune trials and Serve share it


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    os.environ["MLFLOW_TRACKING_URI"] = srv.uri
    yield srv
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    srv.stop()


@pytest.fixture(scope="session")
def ray_cluster(mlflow_server: MlflowServer) -> Iterator[RayHead]:
    """The head inherits MLFLOW_TRACKING_URI and LMREC_HOME, so workers log to the server."""
    import ray

    head = start_ray_head(num_cpus=RAY_NUM_CPUS, env=os.environ.copy())
    os.environ["RAY_ADDRESS"] = head.address
    ray.init(address=head.address, log_to_driver=True)
    yield head
    ray.shutdown()
    os.environ.pop("RAY_ADDRESS", None)
    head.stop()


@pytest.fixture(scope="session")
def synthetic_prepared(ray_cluster: RayHead):
    """A small learnable synthetic dataset, prepared once through the Ray Data pipeline."""
    from lmrec.data.config import DataConfig, SyntheticConfig
    from lmrec.data.prepare import prepare_dataset

    cfg = DataConfig(
        dataset="synthetic", synthetic=SyntheticConfig(num_users=600, num_items=300, num_clusters=12, mean_seq_len=20)
    )
    return cfg, prepare_dataset(cfg)


@pytest.fixture(scope="session")
def serve_model(synthetic_prepared, ray_cluster, tmp_path_factory):
    """A small model trained on the shared cluster and registered as SERVE_MODEL@champion."""
    from lmrec.config import load_config
    from lmrec.tracking.mlflow_utils import set_alias
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.trainer import run_train_job

    data_cfg, _ = synthetic_prepared
    job = load_config(
        TrainJobConfig,
        None,
        [
            "train.epochs=2",
            "train.num_workers=1",
            "train.strategy=none",
            "train.batch_size=32",
            "train.lr=0.003",
            "eval.protocols=[full]",
            "eval.every_epochs=0",
            "eval.max_users=100",
            "tracking.experiment=it-serve",
            f"tracking.model_name={SERVE_MODEL}",
            f"train.storage_path={tmp_path_factory.mktemp('serve-storage')}",
        ],
    )
    job.data = data_cfg
    result = run_train_job(job)
    set_alias(SERVE_MODEL, "champion", result.model_version)
    return result


@pytest.fixture(scope="session")
def serve_http(ray_cluster) -> Iterator[str]:
    """Ray Serve's HTTP ingress on a free loopback port, for every app of the session."""
    from ray import serve

    from support import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
