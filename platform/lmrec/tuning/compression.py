"""Ray Tune search over compression settings: quality vs CPU latency vs size, tracked in MLflow.

config -> teacher (registry version or folder) + prepared dataset, checked before any
trial -> parent MLflow run -> Tuner(Optuna multi-objective + ASHA) -> one Tune trial
per `CompressionSpec`. A trial that trains (a distilled student, or a pruned teacher
with a recovery fine-tune) drives a Ray Train run (Train V2 pattern: the trial
function builds a TorchTrainer whose `RunConfig` carries `TuneReportCallback`); the
worker function reuses `lmrec.training.loop.run_training` with a distillation loss.
Quantization is applied after training, in the trial. Latency and size depend only
on the architecture, so the trial measures them *before* training and every report
carries them (Optuna's multi-objective tell needs all objectives, also for trials
ASHA stops early). The Pareto front (max validation NDCG@10, min p50 latency per
batch size, min bytes) goes to the parent run as a table and a PNG, and its models
are registered as versions of `lmrec-seqrec` with compression tags.

API facts used (Ray 2.60, read from the installed source): `OptunaSearch(space=<define-
by-run>, metric=[...], mode=[...])` does multi-objective; with a list metric it ignores
intermediate results and tells Optuna the last one. `ASHAScheduler(metric, mode)` has
its own metric, so `TuneConfig` gets none. `MLflowLoggerCallback` tags each run with
`trial_name` and logs every reported number, so metric keys must be MLflow-safe
(no '@': reports are renamed `ndcg@10` -> `ndcg_at_10`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from lmrec.compression.latency import LatencyConfig
from lmrec.compression.spec import CompressionSpec
from lmrec.config import ConfigModel, check, evolve, flatten, from_dict, to_dict
from lmrec.data.config import DataConfig
from lmrec.evaluation.config import EvalConfig
from lmrec.tracking.config import TrackingConfig
from lmrec.training.config import TrainConfig

NDCG_KEY = "valid/full/ndcg_at_10"  # MLflow-safe name of valid/full/ndcg@10
SIZE_KEY = "size_bytes"
VARIANT_DIR = "variant"


def safe_key(key: str) -> str:
    """MLflow metric names allow [A-Za-z0-9_-. /]: 'ndcg@10' -> 'ndcg_at_10'."""
    return key.replace("@", "_at_")


def latency_key(batch_size: int) -> str:
    return f"b{batch_size}/p50_ms"


# ---------------------------------------------------------------- config


def _range(values: list[float], key: str, low: float, high: float) -> None:
    check(
        len(values) == 2 and low <= values[0] <= values[1] <= high, key, f"must be [low, high] within [{low}, {high}]"
    )


class CompressionSpace(ConfigModel):
    """What the search samples. Lists of choices, except `temperature` and `alpha` ([low, high])."""

    student: list[bool] = Field(default_factory=lambda: [True, False])  # distil a student, or compress the teacher
    student_layers: list[int] = Field(default_factory=lambda: [1, 2])
    student_hidden: list[int] = Field(default_factory=lambda: [32, 64])
    temperature: list[float] = Field(default_factory=lambda: [1.0, 4.0])
    alpha: list[float] = Field(default_factory=lambda: [0.0, 0.9])
    prune: list[str] = Field(default_factory=lambda: ["none", "structured", "magnitude"])  # teacher only
    prune_amount: list[float] = Field(default_factory=lambda: [0.25, 0.5])
    finetune_steps: list[int] = Field(default_factory=lambda: [0, 20])
    quantize: list[str] = Field(default_factory=lambda: ["none", "int8"])

    def validate_config(self) -> None:
        for key in (
            "student",
            "student_layers",
            "student_hidden",
            "prune",
            "prune_amount",
            "finetune_steps",
            "quantize",
        ):
            check(len(getattr(self, key)) >= 1, key, "needs at least one choice")
        check(all(v >= 1 for v in self.student_layers), "student_layers", "must be >= 1")
        check(all(v >= 8 for v in self.student_hidden), "student_hidden", "must be >= 8")
        _range(self.temperature, "temperature", 1e-3, 100.0)
        _range(self.alpha, "alpha", 0.0, 1.0)
        check(set(self.prune) <= {"none", "structured", "magnitude"}, "prune", "choices: none, structured, magnitude")
        check(all(0 < a < 1 for a in self.prune_amount), "prune_amount", "each must be in (0, 1)")
        check(all(s >= 0 for s in self.finetune_steps), "finetune_steps", "must be >= 0")
        check(set(self.quantize) <= {"none", "int8", "fp16", "bf16"}, "quantize", "choices: none, int8, fp16, bf16")


class DefineCompressionSpace:
    """Optuna define-by-run space (a module-level class: Tune pickles the searcher).

    A student is not pruned; pruning amount and fine-tune steps are sampled only when
    pruning is; temperature and alpha only when something is distilled.
    """

    def __init__(self, space: CompressionSpace) -> None:
        self.space = to_dict(space)

    def __call__(self, trial: Any) -> None:
        sp = self.space
        student = trial.suggest_categorical("student", list(sp["student"]))
        distils = student
        if student:
            trial.suggest_categorical("student_layers", list(sp["student_layers"]))
            trial.suggest_categorical("student_hidden", list(sp["student_hidden"]))
        else:
            prune = trial.suggest_categorical("prune", list(sp["prune"]))
            if prune != "none":
                trial.suggest_categorical("prune_amount", list(sp["prune_amount"]))
                distils = trial.suggest_categorical("finetune_steps", list(sp["finetune_steps"])) > 0
        if distils:
            trial.suggest_float("temperature", sp["temperature"][0], sp["temperature"][1])
            trial.suggest_float("alpha", sp["alpha"][0], sp["alpha"][1])
        trial.suggest_categorical("quantize", list(sp["quantize"]))
        return None


class CompressionSearchConfig(ConfigModel):
    """The Tune run: trials, concurrency, ASHA, initial points, resources."""

    num_samples: int = 8
    max_concurrent: int = 2
    seed: int = 0
    grace_period: int = 2  # ASHA: reports before a trial may be stopped (>= a trial's reports: never stopped)
    reduction_factor: int = 2
    cpus_per_trial: float = 1.0  # the trial process (evaluation, latency); Train workers ask for train.cpus_per_worker
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)  # first trials, e.g. known baselines
    name: str | None = None
    storage_path: str | None = None  # None: LMREC_HOME/ray_results

    def validate_config(self) -> None:
        check(self.num_samples >= 1, "num_samples", "must be >= 1")
        check(self.max_concurrent >= 1, "max_concurrent", "must be >= 1")
        check(self.grace_period >= 1, "grace_period", "must be >= 1")
        check(self.reduction_factor >= 2, "reduction_factor", "must be >= 2")
        check(self.cpus_per_trial > 0, "cpus_per_trial", "must be > 0")


def _tracking_default() -> TrackingConfig:
    return TrackingConfig(experiment="lmrec-compression", alias="candidate")


def _latency_default() -> LatencyConfig:
    return LatencyConfig(iters=20, rounds=2, warmup=2, threads=1, max_seconds=10.0)


class TuneCompressionConfig(ConfigModel):
    """Everything `jobs/tune_compression.py` needs."""

    teacher: str = (
        "models:/lmrec-seqrec@champion"  # registry URI (models:/name/3, models:/name@alias), runs:/ or a folder
    )
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(strategy="none", batch_size=64, lr=2e-3, max_failures=0)
    )
    distill_steps: int = 200  # a student's training budget
    teacher_topk: int = 0  # > 0: KL over the teacher's top-k items (memory); 0 = full catalog
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig(protocols=["full"], ks=[10], every_epochs=1))
    latency: LatencyConfig = Field(default_factory=_latency_default)
    space: CompressionSpace = Field(default_factory=CompressionSpace)
    search: CompressionSearchConfig = Field(default_factory=CompressionSearchConfig)
    tracking: TrackingConfig = Field(default_factory=_tracking_default)
    calibration_rows: int = 256  # rows scoring heads/channels for structured pruning (0 = weight magnitude)
    out: str | None = None  # summary JSON

    def validate_config(self) -> None:
        check(bool(self.teacher), "teacher", "must name a model version, run artifact or folder")
        check(self.distill_steps >= 1, "distill_steps", "must be >= 1")
        check(self.teacher_topk >= 0, "teacher_topk", "must be >= 0")
        check(
            "full" in self.eval.protocols and 10 in self.eval.ks,
            "eval",
            "needs protocol 'full' and k 10 (the objective)",
        )
        check(self.eval.every_epochs >= 1, "eval.every_epochs", "must be >= 1: ASHA stops trials on validation NDCG")
        check(self.calibration_rows >= 0, "calibration_rows", "must be >= 0")
        check(
            not (self.train.strategy == "fsdp" and "magnitude" in self.space.prune),
            "train.strategy",
            "magnitude-pruned fine-tunes re-mask full weights: use strategy 'ddp' or 'none' with prune 'magnitude'",
        )

    def objectives(self) -> tuple[list[str], list[str]]:
        """(metric keys, modes) of the multi-objective search."""
        keys = [NDCG_KEY] + [latency_key(b) for b in self.latency.batch_sizes] + [SIZE_KEY]
        return keys, ["max"] + ["min"] * (len(keys) - 1)


def spec_from_params(params: dict[str, Any], cfg: TuneCompressionConfig, name: str) -> CompressionSpec:
    """The `CompressionSpec` a sampled point stands for (raises ConfigError for invalid points)."""
    student = bool(params.get("student", False))
    prune = "none" if student else params.get("prune", "none")
    data = {
        "name": name,
        "student_layers": params.get("student_layers") if student else None,
        "student_hidden": params.get("student_hidden") if student else None,
        "student_heads": params.get("student_heads") if student else None,
        "distill_steps": cfg.distill_steps if student else 0,
        "temperature": params.get("temperature", 2.0),
        "alpha": params.get("alpha", 0.5),
        "teacher_topk": cfg.teacher_topk,
        "prune": prune,
        "prune_amount": params.get("prune_amount", 0.0) if prune != "none" else 0.0,
        "finetune_steps": params.get("finetune_steps", 0) if prune != "none" else 0,
        "quantize": params.get("quantize", "none"),
    }
    return from_dict(CompressionSpec, data, "trial")


# ---------------------------------------------------------------- inputs, checked before any trial


@dataclass
class Inputs:
    teacher_dir: str  # local folder holding the teacher artifact
    teacher_info: dict[str, Any]
    prepared_path: str
    num_items: int


def resolve_teacher(uri: str, tracking_uri: str | None) -> tuple[Path, dict[str, Any]]:
    """Local folder of the teacher artifact; a clear ValueError when the version does not exist."""
    from lmrec.tracking import mlflow_utils as mt

    if uri.startswith("models:/"):
        try:
            info = mt.resolve_model_version(uri, tracking_uri)
        except Exception as exc:  # MlflowException: RESOURCE_DOES_NOT_EXIST
            raise ValueError(
                f"teacher {uri}: no such registered model version ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]})"
            ) from exc
        return mt.download_model(info["source"], uri=tracking_uri), info
    if uri.startswith("runs:/"):
        return mt.download_model(uri, uri=tracking_uri), {"source": uri}
    path = Path(uri)
    if not path.is_dir():
        raise ValueError(f"teacher {uri}: not a model URI (models:/..., runs:/...) nor an existing folder")
    return path, {"source": str(path)}


def check_inputs(cfg: TuneCompressionConfig) -> Inputs:
    """Resolve the teacher and the dataset and check they match; raises before any trial exists."""
    from lmrec.compression.distill import check_teacher_catalog
    from lmrec.data.prepare import prepare_dataset
    from lmrec.models.artifacts import CONFIG, VOCAB, check_safe
    from lmrec.models.config import SeqRecConfig

    teacher_dir, info = resolve_teacher(cfg.teacher, cfg.tracking.tracking_uri)
    check_safe(teacher_dir)
    tcfg = SeqRecConfig.from_dict(json.loads((teacher_dir / CONFIG).read_text()))
    vocab = json.loads((teacher_dir / VOCAB).read_text())["item_ids"]
    prepared = prepare_dataset(cfg.data)
    try:
        check_teacher_catalog(tcfg.num_items, prepared.num_items, vocab, prepared.manifest["item_ids"])
    except ValueError as exc:
        raise ValueError(f"teacher {cfg.teacher} does not fit dataset {cfg.data.dataset}: {exc}") from exc
    info = {**info, "model": tcfg.name, "num_parameters": tcfg.num_parameters(), "num_items": tcfg.num_items}
    return Inputs(str(teacher_dir), info, str(prepared.path), prepared.num_items)


# ---------------------------------------------------------------- inside a trial


class ExtraMetricsContext:
    """A `RunContext` that adds fixed metrics to every report and makes keys MLflow-safe."""

    def __init__(self, inner: Any, extra: dict[str, float]) -> None:
        self.inner, self.extra = inner, dict(extra)
        self.rank, self.world_size, self.device = inner.rank, inner.world_size, inner.device

    def latest_checkpoint(self) -> Any | None:
        return self.inner.latest_checkpoint()

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.inner.report({**{safe_key(k): v for k, v in metrics.items()}, **self.extra}, checkpoint_dir)

    def publish(self, values: dict[str, float], tags: dict[str, str]) -> None:
        publish = getattr(self.inner, "publish", None)
        if publish is not None:
            publish(values, tags)


def _load_teacher(config: dict[str, Any]) -> Any:
    """The teacher in this process: the driver's folder when visible here, else downloaded."""
    from lmrec.models.artifacts import load_model_dir
    from lmrec.tracking.mlflow_utils import download_model

    folder = Path(config["teacher_dir"])
    if not folder.is_dir():  # another node: fetch it from the tracking server
        folder = download_model(config["teacher_source"], uri=config.get("tracking_uri"))
    return load_model_dir(folder)[0]


def _calib(config: dict[str, Any], max_len: int) -> Any:
    """The structured-pruning calibration rows (same seed in the trial and on every rank)."""
    from lmrec.compression.pipeline import calibration_batch

    n = int(config.get("calibration_rows", 0))
    return calibration_batch(config["prepared_path"], max_len, n) if n else None


def compress_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: distil a student, or fine-tune a pruned teacher, with the standard loop."""
    from lmrec.compression.distill import distillation_loss
    from lmrec.compression.pipeline import masked_loss, starting_model
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.loop import RayTrainContext, run_training

    cfg = from_dict(TrainJobConfig, config["job"])
    spec = from_dict(CompressionSpec, config["spec"])
    ctx = ExtraMetricsContext(RayTrainContext(), config["extra"])
    teacher = _load_teacher(config)
    model, masks, _ = starting_model(spec, teacher, cfg.train.seed, _calib(config, teacher.config.max_seq_len))
    teacher = teacher.to(ctx.device).eval()  # replicated on every rank, frozen
    loss = distillation_loss(teacher, spec.temperature, spec.alpha, spec.teacher_topk)
    if masks is not None:
        loss = masked_loss(loss, {k: v.to(ctx.device) for k, v in masks.items()})
    run_training(cfg, ctx, loss_fn=loss, model=model)


def static_metrics(model: Any, latency: LatencyConfig, workdir: Path) -> dict[str, float]:
    """Latency, bytes and parameters of a (quantized) architecture: they do not depend on training."""
    from lmrec.compression.artifacts import parameter_count, save_variant
    from lmrec.compression.latency import measure_latency
    from lmrec.models.artifacts import artifact_size_bytes

    folder = save_variant(workdir / "shape", model, list(range(1, model.config.num_items + 1)))
    out = {SIZE_KEY: float(artifact_size_bytes(folder)), "num_parameters": float(parameter_count(model))}
    shutil.rmtree(folder, ignore_errors=True)
    lat = measure_latency(model, latency)
    out.update({k: v for k, v in lat.items() if k.endswith(("p50_ms", "p99_ms"))})
    return out


def compression_trial(params: dict[str, Any], job: dict[str, Any]) -> None:
    """The Tune trial: build the variant (via a Ray Train run when it trains), evaluate, report.

    An invalid sampled point (e.g. a width with an odd head dimension) fails this trial
    only; the search goes on and MLflowLoggerCallback marks its run FAILED.
    """
    from lmrec.config import ConfigError

    try:
        _compression_trial(params, job)
    except ConfigError as exc:
        # Tune copies a trial's exception; ConfigError(key, message) cannot be rebuilt from its args.
        raise ValueError(str(exc)) from None


def _compression_trial(params: dict[str, Any], job: dict[str, Any]) -> None:
    import torch
    from ray import tune

    from lmrec.compression.artifacts import save_variant
    from lmrec.compression.pipeline import starting_model, steps_to_schedule, training_steps
    from lmrec.compression.prune import apply_masks_
    from lmrec.compression.quantize import quantize
    from lmrec.data.sequences import SequenceData, train_examples
    from lmrec.evaluation.protocols import evaluate_scorer, model_scorer

    cfg = from_dict(TuneCompressionConfig, job["cfg"])
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    spec = spec_from_params(params, cfg, f"trial-{trial_id}")
    torch.set_num_threads(max(1, int(cfg.search.cpus_per_trial)))
    teacher = _load_teacher(job)
    calib = _calib(job, teacher.config.max_seq_len)
    model, masks, info = starting_model(spec, teacher, cfg.train.seed, calib)
    workdir = Path(ctx.get_trial_dir()) if ctx.get_trial_dir() else Path(tempfile.mkdtemp(prefix="lmrec-trial-"))
    workdir.mkdir(parents=True, exist_ok=True)
    extra = static_metrics(quantize(model, spec.quantize), cfg.latency, workdir)
    steps = training_steps(spec)
    if steps:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        from lmrec.models.artifacts import load_model_dir
        from lmrec.training.config import TrainJobConfig
        from lmrec.training.loop import EXPORT_DIR

        data = SequenceData.load(job["prepared_path"], with_meta=False)
        n = len(train_examples(data, model.config.max_seq_len, cfg.train.sliding_window)[0])
        tc = steps_to_schedule(steps, n, cfg.train)
        tj = TrainJobConfig(
            data=cfg.data,
            train=tc,
            eval=cfg.eval,
            prepared_path=job["prepared_path"],
            tracking=evolve(cfg.tracking, register=False, run_id=None),
        )
        resources = {"CPU": tc.cpus_per_worker, **({"GPU": 1} if tc.use_gpu else {})}
        trainer = TorchTrainer(
            compress_loop_per_worker,
            train_loop_config={**job, "job": to_dict(tj), "spec": spec.to_dict(), "extra": extra},
            torch_config=TorchConfig(backend="nccl" if tc.use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=tc.num_workers, use_gpu=tc.use_gpu, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name=f"train-{trial_id}", storage_path=str(workdir / "train"), callbacks=[TuneReportCallback()]
            ),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"trial {trial_id}: the training run left no checkpoint")
        with result.checkpoint.as_directory() as ckpt:
            model = load_model_dir(Path(ckpt) / EXPORT_DIR)[0]
        if masks is not None:
            apply_masks_(model, masks)  # the last optimizer step moved pruned weights off zero
        info["train_steps"] = int((result.metrics or {}).get("global_step", 0))
    final = quantize(model.eval(), spec.quantize)
    data = SequenceData.load(job["prepared_path"], with_meta=False)
    quality: dict[str, float] = {}
    for split in ("valid", "test"):
        m = evaluate_scorer(
            model_scorer(final),
            data,
            split,
            final.config.max_seq_len,
            cfg.eval.ks,
            cfg.eval.batch_size,
            "cpu",
            ["full"],
            max_users=cfg.eval.max_users,
        )
        quality.update({safe_key(f"{split}/{k}"): v for k, v in m.items() if k.startswith("full/")})
    folder = save_variant(
        workdir / VARIANT_DIR,
        final,
        data.manifest["item_ids"],
        metadata={
            "dataset": data.manifest["dataset"],
            "teacher": job["teacher_source"],
            "metrics": quality,
            "data_config": to_dict(cfg.data),
        },
        compression={**spec.describe(), **info},
    )
    tune.report(
        {**extra, **quality, "final_variant": 1.0, "variant_dir": str(folder), "spec": json.dumps(spec.to_dict())}
    )


# ---------------------------------------------------------------- after the search


def pareto_front(rows: list[dict[str, Any]], keys: list[str], modes: list[str]) -> list[int]:
    """Indices of rows no other row dominates (at least as good everywhere, better somewhere)."""

    def better_eq(a: dict[str, Any], b: dict[str, Any]) -> tuple[bool, bool]:
        ge, gt = True, False
        for k, m in zip(keys, modes):
            x, y = (a[k], b[k]) if m == "max" else (-a[k], -b[k])
            ge &= x >= y
            gt |= x > y
        return ge, gt

    front = []
    for i, r in enumerate(rows):
        dominated = False
        for j, o in enumerate(rows):
            if i != j:
                ge, gt = better_eq(o, r)
                if ge and gt:
                    dominated = True
                    break
        if not dominated:
            front.append(i)
    return front


def front_png(rows: list[dict[str, Any]], front: list[int], latency_metric: str, path: Path) -> Path:
    """NDCG@10 vs p50 latency, marker area proportional to bytes; front points joined and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    biggest = max(r[SIZE_KEY] for r in rows) or 1.0
    size = [30 + 600 * r[SIZE_KEY] / biggest for r in rows]
    ax.scatter(
        [r[latency_metric] for r in rows],
        [r[NDCG_KEY] for r in rows],
        s=size,
        alpha=0.35,
        color="tab:gray",
        label="trials (area ~ bytes)",
    )
    pts = sorted((rows[i][latency_metric], rows[i][NDCG_KEY], i) for i in front)
    ax.scatter(
        [p[0] for p in pts],
        [p[1] for p in pts],
        s=[size[p[2]] for p in pts],
        alpha=0.8,
        color="tab:orange",
        label="Pareto front",
    )
    for x, y, i in pts:
        ax.annotate(rows[i]["label"], (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(f"{latency_metric} (CPU)")
    ax.set_ylabel("validation NDCG@10 (full ranking)")
    ax.set_title("lmrec compression search")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(spec: dict[str, Any]) -> str:
    parts = []
    if spec.get("student_hidden"):
        parts.append(f"student {spec['student_layers']}x{spec['student_hidden']}")
    if spec.get("prune", "none") != "none":
        parts.append(
            f"{spec['prune']} {spec['prune_amount']:.2f}"
            + (f" +ft{spec['finetune_steps']}" if spec.get("finetune_steps") else "")
        )
    if spec.get("quantize", "none") != "none":
        parts.append(spec["quantize"])
    return ", ".join(parts) or "teacher"


def front_table(rows: list[dict[str, Any]], front: list[int], keys: list[str]) -> str:
    head = ["trial", "variant", *keys, "test NDCG@10", "params"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i in front:
        r = rows[i]
        cells = [
            r["trial_id"],
            r["label"],
            *[f"{r[k]:.4g}" for k in keys],
            f"{r.get('test/full/ndcg_at_10', float('nan')):.4f}",
            f"{int(r.get('num_parameters', 0)):,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class CompressionSearchResult:
    parent_run_id: str
    trials: list[dict[str, Any]]  # every trial: status, params, final metrics
    front: list[dict[str, Any]]  # finished trials on the Pareto front, with registered versions
    failed: list[dict[str, Any]]
    seconds: float
    files: dict[str, str] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _trial_rows(grid: Any, keys: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    done, failed = [], []
    for res in grid:
        m = dict(res.metrics or {})
        tid = m.get("trial_id") or Path(str(res.path)).name
        base = {"trial_id": tid, "params": dict(res.config or {}), "path": str(res.path)}
        if res.error is not None:
            failed.append({**base, "error": _error_message(res.error)})
            continue
        if not m.get("final_variant"):
            done.append({**base, "status": "stopped", **{k: m.get(k) for k in keys if k in m}})
            continue
        spec = json.loads(m["spec"])
        row = {**base, "status": "finished", "variant_dir": m["variant_dir"], "spec": spec, "label": _label(spec)}
        row.update({k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        done.append(row)
    return done, failed


def _error_message(err: BaseException) -> str:
    """The root cause's "SomeError: message" line of a (Ray-wrapped) trial error."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)]
    return (causes[-1] if causes else lines[0] if lines else type(err).__name__)[:500]


def _trial_run_ids(parent: str, experiment: str, uri: str) -> dict[str, str]:
    """trial name -> MLflow run id, for the runs MLflowLoggerCallback nested under `parent`."""
    from lmrec.tracking import mlflow_utils as mt

    c = mt.client(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
    return {r.data.tags["trial_name"]: r.info.run_id for r in runs if r.data.tags.get("trial_name")}


def _run_for_trial(trial_id: str, runs: dict[str, str]) -> str | None:
    for name, run_id in runs.items():
        if name.endswith(trial_id):
            return run_id
    return None


def run_compression_search(cfg: TuneCompressionConfig) -> CompressionSearchResult:
    """The whole search job (what `jobs/tune_compression.py` runs)."""
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from lmrec.paths import default_storage_path
    from lmrec.tracking import mlflow_utils as mt
    from lmrec.training.trainer import ensure_ray

    t0 = time.time()
    sc, tr = cfg.search, cfg.tracking
    ensure_ray()
    inputs = check_inputs(cfg)  # bad teacher / catalog mismatch: fails here, before any trial
    uri = mt.resolve_tracking_uri(tr.tracking_uri)
    mt.ensure_experiment(tr.experiment, uri)
    name = sc.name or f"compress-{cfg.data.dataset.replace(':', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = mt.start_run(
        tr.experiment,
        tr.run_name or name,
        flatten(to_dict(cfg)),
        {"lmrec.kind": "compression_search", "lmrec.teacher": cfg.teacher, "lmrec.tune_name": name},
        parent_run_id=tr.parent_run_id,
        uri=uri,
    )
    logger = mt.RunLogger(parent, uri)
    logger.json(inputs.teacher_info, "teacher.json")
    print(f"[lmrec.compress] teacher {cfg.teacher}: {json.dumps(inputs.teacher_info, default=str)[:300]}", flush=True)
    print(f"[lmrec.compress] MLflow search run {parent} at {uri}", flush=True)

    keys, modes = cfg.objectives()
    # ASHA's horizon: a trial reports once per epoch (>= 1 step each) plus two final reports.
    max_reports = max(cfg.distill_steps, max(cfg.space.finetune_steps)) + 2
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        metric=NDCG_KEY,
        mode="max",
        max_t=max_reports,
        grace_period=min(sc.grace_period, max_reports),
        reduction_factor=sc.reduction_factor,
    )
    searcher = OptunaSearch(
        space=DefineCompressionSpace(cfg.space),
        metric=keys,
        mode=modes,
        points_to_evaluate=list(sc.points_to_evaluate) or None,
        sampler=_sampler(sc.seed),
    )
    job = {
        "cfg": to_dict(cfg),
        "teacher_dir": inputs.teacher_dir,
        "teacher_source": inputs.teacher_info["source"],
        "tracking_uri": uri,
        "prepared_path": inputs.prepared_path,
        "calibration_rows": cfg.calibration_rows,
    }
    trainable = tune.with_resources(tune.with_parameters(compression_trial, job=job), {"cpu": sc.cpus_per_trial})
    callback = MLflowLoggerCallback(
        tracking_uri=uri,
        experiment_name=tr.experiment,
        tags={"mlflow.parentRunId": parent, "lmrec.kind": "compression_trial", "lmrec.search_run_id": parent},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, sc.max_concurrent), scheduler=scheduler, num_samples=sc.num_samples
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=sc.storage_path or str(default_storage_path()),
            callbacks=[callback],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            verbose=1,
        ),
    )
    try:
        grid = tuner.fit()
        trials, failed = _trial_rows(grid, keys)
    except Exception:
        logger.end("FAILED")
        raise
    finished = [t for t in trials if t["status"] == "finished"]
    front_idx = pareto_front(finished, keys, modes)
    front = [finished[i] for i in front_idx]
    runs = _trial_run_ids(parent, tr.experiment, uri)
    for row in front:
        run_id = _run_for_trial(row["trial_id"], runs)
        row["run_id"] = run_id
        if run_id is None:
            continue
        mt.RunLogger(run_id, uri).artifacts(row["variant_dir"], mt.MODEL_ARTIFACT_PATH)
        if tr.register:
            tags = {k: str(v) for k, v in CompressionSpec(**row["spec"]).describe().items()}
            tags.update(
                {
                    "kind": "compressed",
                    "teacher": cfg.teacher,
                    "dataset": cfg.data.dataset,
                    "ndcg_at_10": f"{row[NDCG_KEY]:.4f}",
                    "size_bytes": str(int(row[SIZE_KEY])),
                    **{f"p50_ms_b{b}": f"{row[latency_key(b)]:.3f}" for b in cfg.latency.batch_sizes},
                    "search_run_id": parent,
                }
            )
            row["model_version"] = mt.register_model(
                run_id, tr.model_name, tags=tags, uri=uri, description=f"compressed variant: {row['label']}"
            )
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="lmrec-compress-") as tmp:
        table = front_table(finished, front_idx, keys)
        (Path(tmp) / "pareto_front.md").write_text(table + "\n")
        logger.artifact(Path(tmp) / "pareto_front.md")
        files["table"] = "pareto_front.md"
        if finished:
            png = front_png(
                finished, front_idx, latency_key(cfg.latency.batch_sizes[0]), Path(tmp) / "pareto_front.png"
            )
            logger.artifact(png)
            files["png"] = "pareto_front.png"
    logger.json({"front": front, "trials": trials, "failed": failed}, "search.json")
    logger.metrics(
        {
            "trials_finished": len(finished),
            "trials_failed": len(failed),
            "front_size": len(front),
            "trials_stopped": len([t for t in trials if t["status"] == "stopped"]),
        }
    )
    logger.tags(
        {"lmrec.front_versions": ",".join(str(r.get("model_version")) for r in front if r.get("model_version"))}
    )
    logger.end("FINISHED")
    result = CompressionSearchResult(parent, trials, front, failed, time.time() - t0, files)
    print(
        f"[lmrec.compress] {len(finished)} finished, {len(failed)} failed, front of {len(front)}:\n{table}", flush=True
    )
    if cfg.out:
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=1, default=str))
        result.files["summary"] = str(out)
    return result


def _sampler(seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)  # handles several objectives (Optuna >= 4)
