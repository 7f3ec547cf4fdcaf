"""`lmrec demo`: prepare -> train (2 workers, FSDP) -> evaluate -> register, end to end.

Runs on ML-100k when it is present (`--data-dir`, LMREC_DATA_DIR, ../shared/data),
else on synthetic data with a clear notice. Local Ray, SQLite-backed MLflow.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lmrec.config import load_config
from lmrec.data.download import optional_locate
from lmrec.data.readers import dataset_spec
from lmrec.evaluation.metrics import format_metrics
from lmrec.paths import data_dir as resolve_data_dir
from lmrec.training.config import TrainJobConfig

DEMO_CONFIG = Path(__file__).parent / "demo.yaml"


def demo_config(args: argparse.Namespace) -> TrainJobConfig:
    overrides = [f"train.num_workers={args.workers}"]
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    overrides += list(args.overrides)
    return load_config(TrainJobConfig, DEMO_CONFIG, overrides)


def _dashboard_url() -> str:
    import ray

    try:
        ctx = ray.get_runtime_context()
        url = getattr(ctx, "dashboard_url", None) or ray.worker.get_dashboard_url()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 (older/newer Ray)
        url = ""
    if url and not url.startswith("http"):
        url = "http://" + url
    return url or "(dashboard not running)"


def run_demo(args: argparse.Namespace) -> int:
    from lmrec.tracking.mlflow_utils import resolve_tracking_uri
    from lmrec.training.trainer import ensure_ray, run_train_job

    cfg = demo_config(args)  # validated before Ray starts
    ddir = resolve_data_dir(cfg.data.data_dir)
    if cfg.data.dataset.startswith("ml-") and optional_locate(dataset_spec(cfg.data.dataset), ddir) is None:
        print(
            f"NOTICE: MovieLens {cfg.data.dataset} not found under {ddir}; the demo runs on SYNTHETIC data.\n"
            f"        Put ml-100k under <data-dir>/movielens/ml-100k/ (or pass --data-dir) to use real data.",
            flush=True,
        )
    t0 = time.time()
    ensure_ray(num_cpus=max(4, cfg.train.num_workers + 1))
    print(f"[lmrec demo] Ray dashboard: {_dashboard_url()}", flush=True)
    result = run_train_job(cfg, extra_tags={"lmrec.demo": "1"})
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri)
    print("\n================ lmrec demo: done in %.0fs ================" % (time.time() - t0))
    print(
        f"dataset: {result.prepared.manifest['dataset']} ({result.prepared.num_users:,} users, "
        f"{result.prepared.num_items:,} items){'  [SYNTHETIC]' if result.prepared.manifest.get('notice') else ''}"
    )
    print("test metrics (full ranking excludes each user's history; sampled = 100 negatives):")
    print(format_metrics({k: v for k, v in result.metrics.items() if k.startswith("test/")}, "  "))
    print(f"MLflow run ID:   {result.run_id}")
    print(f"registered:      {result.model_uri} (alias '{cfg.tracking.alias}')")
    if uri.startswith("sqlite:"):
        print(f"open MLflow UI:  mlflow ui --backend-store-uri {uri} --port 5000   (then http://127.0.0.1:5000)")
    else:
        print(f"MLflow server:   {uri}")
    print(f"Ray dashboard:   {_dashboard_url()}  (alive while this process runs; `ray start --head` keeps one up)")
    if not args.no_serve:
        import importlib.util

        if importlib.util.find_spec("lmrec.serving.demo") is not None:
            from lmrec.serving.demo import serve_demo

            serve_demo(result)
    return 0
