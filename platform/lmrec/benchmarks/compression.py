"""The compression benchmark: teacher vs variants on quality, size and CPU latency, in one process.

Prepares the dataset in-process (no Ray), trains the teacher with the standard
loop (or loads a given artifact), builds each `CompressionSpec` variant, evaluates
full-ranking NDCG@10/HR@10 on the test split, saves every variant as a safe
artifact (bytes on disk), times all models interleaved, and checks the issue's
targets (`compression_report`). `jobs/benchmark_compression.py` runs `main`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from lmrec.benchmarks.compression_report import check_targets, format_table
from lmrec.compression.artifacts import parameter_count, save_variant
from lmrec.compression.latency import LatencyConfig, load_average, measure_latencies
from lmrec.compression.spec import CompressionSpec
from lmrec.compression.variant import calibration_batch
from lmrec.config import ConfigError, ConfigModel, check, config_hash, evolve, load_config, to_dict
from lmrec.data.config import DataConfig
from lmrec.evaluation.config import EvalConfig
from lmrec.models.seqrec import SeqRecModel
from lmrec.models.sizes import ModelSpec
from lmrec.training.compress import build_variant
from lmrec.training.config import TrainConfig

TEACHER_DIR = "teacher"
VARIANTS_DIR = "variants"


class TeacherSection(ConfigModel):
    """The teacher: an existing artifact folder, or a model trained here first (cached in out_dir)."""

    artifact: str | None = None
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(size="small"))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=20, strategy="none", batch_size=64))

    def validate_config(self) -> None:
        check(self.artifact is None or bool(self.artifact), "artifact", "must be a folder path or null")
        check(self.train.num_workers == 1, "train.num_workers", "the benchmark trains in-process: use 1")


class BenchmarkConfig(ConfigModel):
    """Everything the compression benchmark needs (`jobs/configs/benchmark_compression/*.yaml`)."""

    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    student_train: TrainConfig = Field(default_factory=lambda: TrainConfig(strategy="none", batch_size=64, lr=2e-3))
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig(protocols=["full"], ks=[10, 20], every_epochs=0))
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    variants: list[CompressionSpec] = Field(default_factory=list)
    calibration_rows: int = 256  # training rows scoring heads/channels for structured pruning (0 = weight magnitude)
    threads: int = 0  # torch threads for training/eval; 0 = torch default
    out_dir: str = "out/benchmark_compression"

    def validate_config(self) -> None:
        check(len(self.variants) >= 1, "variants", "list at least one variant")
        names = [v.name for v in self.variants]
        check(
            len(set(names)) == len(names) and "teacher" not in names,
            "variants",
            "variant names must be unique and not 'teacher'",
        )
        check("full" in self.eval.protocols and 10 in self.eval.ks, "eval", "needs protocol 'full' and k 10")
        check(self.calibration_rows >= 0, "calibration_rows", "must be >= 0")
        check(self.threads >= 0, "threads", "must be >= 0")


# ---------------------------------------------------------------- data and teacher


def prepare_local_cached(cfg: DataConfig) -> Path:
    """The prepared dataset folder for `cfg`, built in-process (no Ray) and cached by config hash."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmrec.data.prepare import MANIFEST, cache_key, prepare_local, resolve_source
    from lmrec.data.readers import read_interactions
    from lmrec.paths import prepared_dir

    source = resolve_source(cfg)
    if source.notice:
        print(f"NOTICE: {source.notice}", flush=True)
    out = prepared_dir() / f"local-{source.dataset.replace(':', '-')}-{cache_key(cfg, source)[:12]}"
    if (out / MANIFEST).exists():
        return out
    if source.kind == "text":
        assert source.fmt is not None
        table = pa.concat_tables([read_interactions(f, source.fmt) for f in source.files])
    else:
        table = pa.concat_tables([pq.read_table(f) for f in source.files])
    return prepare_local(cfg, table, out).path


def get_teacher(cfg: BenchmarkConfig, prepared: Path, out_dir: Path) -> tuple[SeqRecModel, dict[str, Any]]:
    """Load the configured teacher artifact, or the cached one, or train it (and cache it)."""
    from lmrec.data.sequences import SequenceData
    from lmrec.models.artifacts import load_model_dir, save_model_dir
    from lmrec.models.seqrec import init_weights_
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.context import LocalContext
    from lmrec.training.loop import run_training

    manifest = json.loads((prepared / "manifest.json").read_text())
    if cfg.teacher.artifact:
        model, _, meta = load_model_dir(cfg.teacher.artifact)
        return model, {"source": cfg.teacher.artifact, **{k: meta.get(k) for k in ("dataset", "global_step")}}
    key = config_hash({"model": cfg.teacher.model, "train": cfg.teacher.train, "data": manifest["config_hash"]})
    cached = out_dir / TEACHER_DIR
    if (cached / "metadata.json").exists() and json.loads((cached / "metadata.json").read_text()).get(
        "teacher_key"
    ) == key:
        model, _, meta = load_model_dir(cached)
        print(f"[bench] teacher from cache {cached}", flush=True)
        return model, {"source": str(cached), "cached": True, "train_seconds": meta.get("train_seconds")}
    data = SequenceData.load(prepared, with_meta=False)
    model = SeqRecModel(cfg.teacher.model.build(data.num_items))
    init_weights_(model, cfg.teacher.train.seed)
    job = TrainJobConfig(
        data=cfg.data,
        model=cfg.teacher.model,
        train=cfg.teacher.train,
        eval=evolve(cfg.eval, every_epochs=max(1, cfg.teacher.train.epochs // 4)),
        prepared_path=str(prepared),
    )
    t0 = time.time()
    final = run_training(job, LocalContext(), model=model)
    seconds = round(time.time() - t0, 1)
    save_model_dir(
        cached,
        model.config,
        {k: v.detach().cpu() for k, v in model.state_dict().items()},
        manifest["item_ids"],
        {
            "teacher_key": key,
            "train_seconds": seconds,
            "dataset": manifest["dataset"],
            "metrics": {k: v for k, v in final.items() if "/" in k},
        },
    )
    return model.eval(), {"source": "trained", "train_seconds": seconds}


# ---------------------------------------------------------------- the run


def _quality(model: SeqRecModel, data: Any, cfg: BenchmarkConfig) -> dict[str, float]:
    from lmrec.evaluation.protocols import evaluate_scorer, model_scorer

    out = {}
    for split in ("valid", "test"):
        m = evaluate_scorer(
            model_scorer(model),
            data,
            split,
            model.config.max_seq_len,
            cfg.eval.ks,
            cfg.eval.batch_size,
            "cpu",
            ["full"],
        )
        out.update({f"{split}/{k}": v for k, v in m.items() if k.startswith("full/")})
    return out


def run_benchmark(cfg: BenchmarkConfig, out_json: str | Path | None = None) -> dict[str, Any]:
    """Build, evaluate, save and time the teacher and every variant; return (and write) the results."""
    from lmrec.data.sequences import SequenceData
    from lmrec.models.artifacts import artifact_size_bytes

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    prepared = prepare_local_cached(cfg.data)
    data = SequenceData.load(prepared, with_meta=False)
    print(
        f"[bench] dataset {data.manifest['dataset']}: {data.num_users:,} users, {data.num_items:,} items ({prepared})",
        flush=True,
    )
    teacher, teacher_info = get_teacher(cfg, prepared, out_dir)
    item_ids = data.manifest["item_ids"]
    calib = (
        calibration_batch(prepared, teacher.config.max_seq_len, cfg.calibration_rows) if cfg.calibration_rows else None
    )

    models: dict[str, SeqRecModel] = {"teacher": teacher}
    rows: list[dict[str, Any]] = []
    teacher_dir = save_variant(out_dir / VARIANTS_DIR / "teacher", teacher, item_ids, compression={"name": "teacher"})
    rows.append(
        {
            "variant": "teacher",
            "params": parameter_count(teacher),
            "bytes": artifact_size_bytes(teacher_dir),
            **_quality(teacher, data, cfg),
            "info": teacher_info,
        }
    )
    print(f"[bench] teacher: {rows[0]['params']:,} params, test NDCG@10 {rows[0]['test/full/ndcg@10']:.4f}", flush=True)
    trained: dict[str, Any] = {}  # students / fine-tuned models shared by variants that differ only in quantization
    for spec in cfg.variants:
        res = build_variant(spec, teacher, prepared, cfg.student_train, cfg.eval, calib_inputs=calib, cache=trained)
        folder = save_variant(
            out_dir / VARIANTS_DIR / spec.name,
            res.model,
            item_ids,
            metadata={"dataset": data.manifest["dataset"]},
            compression=spec.describe(),
        )
        row = {
            "variant": spec.name,
            "params": parameter_count(res.model),
            "bytes": artifact_size_bytes(folder),
            **_quality(res.model, data, cfg),
            "info": res.info,
        }
        rows.append(row)
        models[spec.name] = res.model
        print(
            f"[bench] {spec.name}: {row['params']:,} params, {row['bytes']:,} bytes, test NDCG@10 "
            f"{row['test/full/ndcg@10']:.4f} (built in {res.info['build_seconds']}s)",
            flush=True,
        )

    specs = {s.name: s for s in cfg.variants}
    result = {
        "config": to_dict(cfg),
        "dataset": {
            "name": data.manifest["dataset"],
            "users": data.num_users,
            "items": data.num_items,
            "prepared": str(prepared),
        },
        "rows": rows,
    }
    _time_and_judge(result, models, cfg, specs)
    result["seconds"] = round(time.time() - t_start, 1)
    if out_json:
        path = Path(out_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=str))
    return result


def _time_and_judge(
    result: dict[str, Any], models: dict[str, SeqRecModel], cfg: BenchmarkConfig, specs: dict[str, CompressionSpec]
) -> None:
    """Time every model (interleaved), fill ratios and speed-ups into the rows, judge the targets."""
    load_before = load_average()
    lat = measure_latencies(models, cfg.latency)
    load_after = load_average()
    rows = result["rows"]
    t_params, t_bytes = rows[0]["params"], rows[0]["bytes"]
    for row in rows:
        row.update(lat[row["variant"]])
        row["params_ratio"] = row["params"] / t_params
        row["bytes_ratio"] = row["bytes"] / t_bytes
        row["ndcg_ratio"] = row["test/full/ndcg@10"] / max(rows[0]["test/full/ndcg@10"], 1e-12)
        for bs in cfg.latency.batch_sizes:
            row[f"b{bs}/speedup_p50"] = rows[0][f"b{bs}/p50_ms"] / row[f"b{bs}/p50_ms"]
    result["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "latency_threads": cfg.latency.threads or torch.get_num_threads(),
        "load_avg_1m_before_timing": load_before,
        "load_avg_1m_after_timing": load_after,
        "timed_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    result["targets"] = check_targets(rows, specs, cfg.latency.batch_sizes)


def retime_saved(cfg: BenchmarkConfig, json_path: str | Path) -> dict[str, Any]:
    """Re-measure latency of the artifacts a previous run saved (loaded as serving loads them).

    For re-timing on a quieter machine without rebuilding; quality and size are kept.
    """
    from lmrec.compression.artifacts import load_variant

    path = Path(json_path)
    result = json.loads(path.read_text())
    result["config"]["latency"] = to_dict(cfg.latency)
    models = {
        row["variant"]: load_variant(Path(cfg.out_dir) / VARIANTS_DIR / row["variant"])[0] for row in result["rows"]
    }
    specs = {s["name"]: CompressionSpec(**s) for s in result["config"]["variants"]}
    _time_and_judge(result, models, cfg, specs)
    result["retimed_from_artifacts"] = True
    path.write_text(json.dumps(result, indent=1, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse the config (exit 2 on a config error, before any work), run or re-time, print, write JSON."""
    parser = argparse.ArgumentParser(
        description="Benchmark compressed variants against their teacher: params, bytes, NDCG@10/HR@10, "
        "CPU p50/p99 latency."
    )
    parser.add_argument("--config", help="YAML under jobs/configs/benchmark_compression/")
    parser.add_argument("--out", default="out/benchmark_compression.json", help="results JSON")
    parser.add_argument("--retime", action="store_true", help="only re-time the artifacts an earlier run saved")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. latency.iters=50")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(BenchmarkConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    result = retime_saved(cfg, args.out) if args.retime else run_benchmark(cfg, args.out)
    print(format_table(result))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
