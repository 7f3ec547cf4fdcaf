"""Inside a compression trial: build the variant (through a Ray Train run when it trains),
measure latency and size, evaluate, report. Tune and Ray Train run `compression_trial` and
`compress_loop_per_worker` by reference: they stay top-level functions here."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lmrec.compression.latency import LatencyConfig
from lmrec.compression.spec import CompressionSpec
from lmrec.config import evolve, from_dict, to_dict
from lmrec.tuning.compression.config import SIZE_KEY, VARIANT_DIR, TuneCompressionConfig, safe_key, spec_from_params


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
    from lmrec.compression.variant import calibration_batch

    n = int(config.get("calibration_rows", 0))
    return calibration_batch(config["prepared_path"], max_len, n) if n else None


def compress_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: distil a student, or fine-tune a pruned teacher, with the standard loop."""
    from lmrec.compression.distill import distillation_loss
    from lmrec.compression.variant import masked_loss, starting_model
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.context import RayTrainContext
    from lmrec.training.loop import run_training

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
    from lmrec.compression.prune import apply_masks_
    from lmrec.compression.quantize import quantize
    from lmrec.compression.variant import starting_model, training_steps
    from lmrec.data.sequences import SequenceData, train_examples
    from lmrec.evaluation.protocols import evaluate_scorer, model_scorer
    from lmrec.training.compress import steps_to_schedule

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
        from lmrec.training.steps import EXPORT_DIR

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
