"""The `lmrec` command: demo, prepare, train, evaluate, models (more per subsystem).

Every subcommand validates its config before asking Ray for anything; a config
error prints the offending key and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lmrec.config import ConfigError, load_config
from lmrec.evaluation.metrics import format_metrics


def _size_help(num_items: int = 10_000) -> str:
    from lmrec.models.sizes import size_table

    rows = size_table(num_items)
    lines = [f"model sizes (parameters with a {num_items:,}-item catalog):"]
    for r in rows:
        lines.append(
            f"  {r['size']:<6} {r['layers']:>2} layers x {r['hidden']:>4} wide, {r['heads']:>2} heads: "
            f"{r['backbone_params'] / 1e6:8.1f}M backbone, {r['total_params'] / 1e6:8.1f}M total"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- subcommands


def cmd_models(args: argparse.Namespace) -> int:
    print(_size_help(args.num_items))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from lmrec.data.config import DataConfig
    from lmrec.data.prepare import prepare_dataset
    from lmrec.training.trainer import ensure_ray

    overrides = [f"dataset={args.dataset}"] + (["data_dir=" + args.data_dir] if args.data_dir else []) + args.overrides
    cfg = load_config(DataConfig, args.config, overrides)
    ensure_ray()
    prepared = prepare_dataset(cfg, force=args.force)
    m = prepared.manifest
    print(f"{'cached' if prepared.cached else 'prepared'}: {prepared.path}")
    print(
        f"users {m['num_users']:,}  items {m['num_items']:,}  interactions {m['num_interactions']:,}  "
        f"(raw {m['raw_interactions']:,}; k-core iterations {m['kcore_iterations']})"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.trainer import run_train_job, write_metrics_json

    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    cfg = load_config(TrainJobConfig, args.config, overrides)  # fails here, before Ray, on bad keys
    result = run_train_job(cfg)
    print("\nfinal metrics:")
    print(format_metrics(result.metrics, "  "))
    print(f"MLflow run: {result.run_id}   model: {result.model_uri or '(not registered)'}")
    print(f"checkpoint: {result.checkpoint_path}")
    write_metrics_json({**result.metrics, "run_id": result.run_id, "model_uri": result.model_uri}, args.metrics_out)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from lmrec.content.config import EmbedJobConfig
    from lmrec.content.job import run_embed_job

    cfg = load_config(EmbedJobConfig, args.config, list(args.overrides))  # fails here, before Ray, on bad keys
    result = run_embed_job(cfg)
    m = result.meta
    print(
        f"{'cached' if result.cached else 'embedded'}: {m['items']:,} items x {m['dim']} with {m['encoder']} "
        f"({m['items_without_text']:,} without text); {m.get('items_per_s') or '-'} items/s when computed"
    )
    print(f"embeddings: {result.path}   MLflow run: {result.run_id}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lmrec.config import deep_merge, load_yaml, parse_overrides
    from lmrec.serving import launch

    cfg: dict = load_yaml(args.config) if args.config else {}
    if args.model_uri:
        cfg["model_uri"] = args.model_uri
    cfg = deep_merge(cfg, parse_overrides(args.overrides))
    url = launch.start(cfg, host=args.host, port=args.port, blocking=False)
    print(f"recommender app deployed at {url}  (POST /recommend, POST /feedback, GET /healthz, GET /version, /docs)")
    if args.wait:
        import time
        import urllib.request

        deadline = time.time() + args.wait
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                    print(r.read().decode())
                    return 0
            except Exception:  # noqa: BLE001 (loading)
                time.sleep(1)
        print("model not loaded yet; check GET /healthz", file=sys.stderr)
        return 1
    if args.block:
        import time

        print("serving; Ctrl-C to stop")
        while True:
            time.sleep(3600)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from lmrec.tracking import mlflow_utils as mt

    if args.version:
        mt.set_alias(args.name, args.to_alias, args.version)
        version = args.version
    else:
        version = mt.promote(args.name, args.from_alias, args.to_alias)
    print(f"{args.name}@{args.to_alias} -> version {version}")
    return 0


def front_versions(
    model_name: str, tracking_uri: str | None = None, search_run_id: str | None = None
) -> list[dict[str, str]]:
    """Registered compressed variants (the Pareto fronts of compression searches), newest first."""
    from mlflow import MlflowClient

    from lmrec.tracking.mlflow_utils import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    rows = []
    for mv in client.search_model_versions(f"name='{model_name}'"):
        tags = dict(mv.tags or {})
        if tags.get("kind") != "compressed" or (search_run_id and tags.get("search_run_id") != search_run_id):
            continue
        rows.append(
            {
                "version": str(mv.version),
                "aliases": ",".join(getattr(mv, "aliases", []) or []),
                "ndcg_at_10": tags.get("ndcg_at_10", ""),
                "size_bytes": tags.get("size_bytes", ""),
                **{k: v for k, v in tags.items() if k.startswith(("compression.", "p50_ms_"))},
                "search_run_id": tags.get("search_run_id", ""),
            }
        )
    return sorted(rows, key=lambda r: -int(r["version"]))


def cmd_tune_train(args: argparse.Namespace) -> int:
    from lmrec.tuning.training import TuneTrainConfig, run_train_search

    cfg = load_config(TuneTrainConfig, args.config, args.overrides)  # fails here, before Ray, on bad keys
    try:
        result = run_train_search(cfg)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    if args.front:
        rows = front_versions(args.model_name, args.tracking_uri, args.search_run)
        if not rows:
            print(
                f"no compressed versions of {args.model_name} are registered (run `lmrec compress --config ...` first)"
            )
            return 1
        cols = ["version", "aliases", "ndcg_at_10", "size_bytes"] + sorted(
            {k for r in rows for k in r if k.startswith(("compression.", "p50_ms_"))}
        )
        print("  ".join(f"{c:>14}" for c in cols))
        for r in rows:
            print("  ".join(f"{str(r.get(c, '')):>14}" for c in cols))
        print(
            "\npick one and make it the champion (serving hot-swaps to it):\n"
            f"  lmrec promote --name {args.model_name} --version <version> --to champion"
        )
        return 0
    from lmrec.tuning.compression import TuneCompressionConfig, run_compression_search

    cfg = load_config(TuneCompressionConfig, args.config, args.overrides)  # fails here, before Ray, on bad keys
    try:
        result = run_compression_search(cfg)
    except ValueError as exc:  # unknown teacher version / catalog mismatch: before any trial
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"search run {result.parent_run_id}: front {[r.get('model_version') for r in result.front]}, "
        f"{len(result.failed)} failed trial(s)"
    )
    print(f"list it: lmrec compress --front --search-run {result.parent_run_id}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    import json

    from lmrec.pipeline import PipelineConfig, run_pipeline

    cfg = load_config(PipelineConfig, args.config, args.overrides)  # fails here, before Ray, on bad keys
    state = run_pipeline(cfg)
    print(
        json.dumps(
            {k: {kk: vv for kk, vv in v.items() if kk != "args"} for k, v in state["stages"].items()},
            indent=1,
            default=str,
        )
    )
    print(f"pipeline run: {state['pipeline_run_id']}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from lmrec.cluster import jobs

    out = jobs.submit(
        args.job,
        args.config,
        args.overrides,
        address=args.address,
        working_dir=args.working_dir,
        tracking_uri=args.tracking_uri,
        submission_id=args.submission_id,
    )
    if out.get("note"):
        print(f"note: {out['note']}")
    print(f"submitted {out['submission_id']}: {out['entrypoint']}")
    print(f"dashboard: {out['dashboard_url']}")
    if args.wait:
        print(jobs.logs(out["submission_id"], args.address, follow=True))
        final = jobs.wait(out["submission_id"], args.address)
        print(f"{out['submission_id']}: {final}")
        return 0 if final.endswith("SUCCEEDED") else 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from lmrec.cluster import jobs

    for row in jobs.status(args.submission_id, args.address):
        print(f"{row['submission_id']:<40} {row['status']:<24} {row['entrypoint']}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from lmrec.cluster import jobs

    text = jobs.logs(args.submission_id, args.address, follow=args.follow)
    if text:
        print(text, end="")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lmrec.evaluate_cli import evaluate_main

    return evaluate_main(args)


def cmd_schema(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lmrec.config import json_schema
    from lmrec.jobs_registry import CONFIG_CLASSES, OTHER_SCHEMAS, config_class, schema_file

    jobs = sorted(CONFIG_CLASSES) + sorted(OTHER_SCHEMAS) if args.job == "all" else [args.job]
    for job in jobs:
        try:
            cls = config_class(job)
        except KeyError as exc:
            print(f"lmrec schema: {exc.args[0]}", file=sys.stderr)
            return 2
        text = json.dumps(json_schema(cls), indent=2, sort_keys=True) + "\n"
        if args.write:
            path = Path(args.write) / schema_file(job)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
        else:
            print(text, end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lmrec.demo import run_demo

    return run_demo(args)


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lmrec", description="Train, compress, tune and serve sequential recommenders on Ray."
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "demo",
        help="prepare -> train (2 workers, FSDP) -> evaluate -> register, end to end",
        description="End-to-end demo on ML-100k (or synthetic data when MovieLens is absent).",
    )
    s.add_argument("--data-dir", help="folder holding movielens/ml-100k (default: LMREC_DATA_DIR, then ../shared/data)")
    s.add_argument("--epochs", type=int, default=None, help="training epochs (default from the demo config)")
    s.add_argument("--workers", type=int, default=2, help="Ray Train workers (FSDP over gloo on CPU)")
    s.add_argument("--no-serve", action="store_true", help="stop after registering (skip the serving step)")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("prepare", help="prepare a dataset (Ray Data; cached by config hash)")
    s.add_argument("--dataset", default="ml-100k", help="ml-100k | ml-1m | ml-20m | ml-25m | synthetic | sasrec:<Name>")
    s.add_argument("--config", help="YAML of a DataConfig")
    s.add_argument("--data-dir")
    s.add_argument("--force", action="store_true", help="re-run even if cached")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser(
        "train",
        help="train on Ray Train (config YAML + dotted overrides)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a SeqRec model with Ray Train.\n\n" + _size_help(),
        epilog="example: lmrec train --config jobs/configs/train/ml100k_tiny.yaml train.epochs=3 model.size=small",
    )
    s.add_argument("--config", help="YAML under jobs/configs/train/")
    s.add_argument("--data-dir")
    s.add_argument("--metrics-out", help="write final metrics JSON here")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser(
        "embed",
        help="embed item text with Ray Data (wordllama offline, or hf:<model>), cached, logged to MLflow",
        epilog="example: lmrec embed --config jobs/configs/embed_items/ml100k_wordllama.yaml embed.concurrency=2",
    )
    s.add_argument("--config", help="YAML under jobs/configs/embed_items/")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. embed.encoder=hf:BAAI/bge-small-en-v1.5")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser(
        "evaluate",
        help="evaluate a registered model or a checkpoint; writes metrics JSON",
        description="Full-ranking (history excluded) and sampled (100 negatives) metrics.",
    )
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-uri", help="models:/lmrec-seqrec@candidate, models:/name/3, runs:/<id>/model or a folder")
    src.add_argument("--checkpoint", help="a Ray Train checkpoint folder written by lmrec")
    s.add_argument("--dataset", help="dataset to evaluate on (default: the one the model was trained on)")
    s.add_argument("--data-dir")
    s.add_argument("--split", choices=["valid", "test"], default="test")
    s.add_argument("--protocols", default="full,sampled")
    s.add_argument("--ks", default="5,10,20")
    s.add_argument("--max-users", type=int)
    s.add_argument("--out", default="metrics.json", help="metrics JSON path")
    s.add_argument("overrides", nargs="*", help="data.* overrides for preparing the dataset")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser(
        "serve",
        help="deploy the recommender app (Ray Serve) on the local/RAY_ADDRESS cluster",
        description="Deploy the recommender app (lmrec.serving.app); the model defaults to models:/lmrec-seqrec@champion.",
    )
    s.add_argument("--model-uri", help="models:/name@alias, models:/name/3, runs:/<id>/model or a folder")
    s.add_argument("--config", help="YAML of ServeConfig keys (the `args:` block of serve_apps/recommender.yaml)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--wait", type=float, default=120.0, help="seconds to wait for /healthz (0 = don't)")
    s.add_argument("--block", action="store_true", help="keep running until Ctrl-C")
    s.add_argument("overrides", nargs="*", help="ServeConfig overrides, e.g. batch.max_batch_size=32")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("promote", help="move a registry alias, e.g. candidate -> champion (serving hot-swaps)")
    s.add_argument("--name", default="lmrec-seqrec")
    s.add_argument("--from", dest="from_alias", default="candidate")
    s.add_argument("--to", dest="to_alias", default="champion")
    s.add_argument("--version", help="point the alias at this version instead of --from's")
    s.set_defaults(func=cmd_promote)

    s = sub.add_parser(
        "compress",
        help="compression search on Ray Tune, or --front to list the registered variants to promote",
        epilog="examples: lmrec compress --config jobs/configs/tune_compression/ml100k.yaml teacher=models:/lmrec-seqrec/3\n"
        "          lmrec compress --front  then  lmrec promote --version <v> --to champion",
    )
    s.add_argument("--config", help="YAML under jobs/configs/tune_compression/")
    s.add_argument("--front", action="store_true", help="list registered compressed versions instead of searching")
    s.add_argument("--search-run", help="with --front: only this search's variants")
    s.add_argument("--model-name", default="lmrec-seqrec")
    s.add_argument("--tracking-uri")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(func=cmd_compress)

    s = sub.add_parser(
        "tune-train",
        help="search training hyperparameters with Ray Tune (ASHA + Optuna), each trial the training loop",
        epilog="example: lmrec tune-train --config jobs/configs/tune_train/beauty_fused.yaml search.num_samples=8",
    )
    s.add_argument("--config", help="YAML under jobs/configs/tune_train/")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(func=cmd_tune_train)

    s = sub.add_parser("pipeline", help="the whole loop as one job, resumable per stage (same name = resume)")
    s.add_argument("--config", help="YAML under jobs/configs/pipeline/")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(func=cmd_pipeline)

    s = sub.add_parser(
        "submit",
        help="submit jobs/<job>.py to a Ray cluster (Jobs SDK), validated locally first",
        epilog="example: lmrec submit train --config jobs/configs/train/ml100k_tiny.yaml train.epochs=3",
    )
    s.add_argument("job", help="a script under jobs/, e.g. train, pipeline, tune_compression, tune_exploration")
    s.add_argument("--config")
    s.add_argument("--address", help="the dashboard URL, http://<head>:8265 (default: RAY_ADDRESS)")
    s.add_argument("--working-dir", default=".")
    s.add_argument("--tracking-uri", help="MLFLOW_TRACKING_URI for the job (default: this shell's)")
    s.add_argument("--submission-id")
    s.add_argument("--wait", action="store_true", help="follow the logs until the job ends")
    s.add_argument("overrides", nargs="*")
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser("status", help="status of submitted jobs (all, or one)")
    s.add_argument("submission_id", nargs="?")
    s.add_argument("--address")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("logs", help="logs of a submitted job")
    s.add_argument("submission_id")
    s.add_argument("--address")
    s.add_argument("--follow", "-f", action="store_true")
    s.set_defaults(func=cmd_logs)

    s = sub.add_parser(
        "schema",
        help="print the JSON Schema of a job's config (editors check YAMLs against it)",
        epilog="example: lmrec schema train; lmrec schema all --write .  (refreshes jobs/schemas/*.schema.json)",
    )
    s.add_argument(
        "job", help="train, tune_exploration, tune_compression, benchmark_compression, pipeline, serve, or all"
    )
    s.add_argument("--write", metavar="ROOT", help="write <ROOT>/jobs/schemas/<job>.schema.json instead of printing")
    s.set_defaults(func=cmd_schema)

    s = sub.add_parser("models", help="list model sizes with parameter counts")
    s.add_argument("--num-items", type=int, default=10_000)
    s.set_defaults(func=cmd_models)

    for register in _EXTENSIONS:
        register(sub)
    return p


# Subsystems (serving, tuning, compression, cluster) add subcommands here.
_EXTENSIONS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Dotted overrides may follow options (`--config x.yaml train.lr=1e-3 --address ...`):
    # argparse leaves those after the first option unparsed; they are overrides too.
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"lmrec {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        # Missing data, unsafe artifacts, catalog mismatches: user errors, not tracebacks.
        from lmrec.evaluate_cli import CatalogMismatch
        from lmrec.models.artifacts import UnsafeArtifactError

        if isinstance(exc, (FileNotFoundError, CatalogMismatch, UnsafeArtifactError)):
            print(f"lmrec {args.command}: {exc}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
