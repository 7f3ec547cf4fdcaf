"""The training loop: `run_training` strings the pieces of `lmrec.training.steps` together.

Pieces (steps.py): `setup_model` (build, init, shard, optimizer), `train_step` (one
optimisation step with a pluggable loss), `evaluate` (distributed full-ranking and
sampled metrics), `export_model` (gather full weights to rank 0 as safetensors).
The loop talks to its environment only through a `RunContext` (context.py):
`RayTrainContext` under Ray Train, `LocalContext` in-process. So the loop runs without a
cluster (tests, benchmarks) exactly as it runs on one.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

from lmrec.config import from_dict, to_dict
from lmrec.data.item_features import ItemFeatures, load_item_features
from lmrec.data.sequences import SequenceData, shard_batches, train_examples
from lmrec.models.seqrec import SeqRecModel
from lmrec.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from lmrec.training.config import TrainJobConfig
from lmrec.training.context import RayTrainContext, RunContext
from lmrec.training.sharding import state_bytes
from lmrec.training.steps import (
    EXPORT_DIR,
    JOB_CONFIG_FILE,
    MODEL_CONFIG_FILE,
    LossFn,
    all_reduce,
    default_loss,
    evaluate,
    export_model,
    id_mask_from_counts,
    lr_at,
    setup_model,
    train_step,
)

# ------------------------------------------------------------------ the loop


class _Progress:
    """Driver-log progress lines from rank 0: step, loss, samples/s, ETA."""

    def __init__(self, total_steps: int, done_steps: int, samples_per_step: int) -> None:
        self.total, self.start_done = total_steps, done_steps
        self.samples_per_step = samples_per_step
        self.t0 = time.time()

    def samples_per_s(self, global_step: int) -> float:
        return (global_step - self.start_done) * self.samples_per_step / max(1e-9, time.time() - self.t0)

    def line(self, epoch: int, epochs: int, step: int, steps: int, global_step: int, loss: float) -> str:
        elapsed = max(1e-9, time.time() - self.t0)
        done = global_step - self.start_done
        sps = done * self.samples_per_step / elapsed
        eta = (self.total - global_step) * elapsed / max(1, done)
        return (
            f"[lmrec.train] epoch {epoch + 1}/{epochs} step {step}/{steps} (global {global_step}/{self.total}) "
            f"loss {loss:.4f} samples/s {sps:,.0f} eta {_fmt_secs(eta)}"
        )


def say(message: str) -> None:
    """One progress line to stdout (bypasses Ray Train's print patch, which echoes lines twice)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _fmt_secs(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _logger(cfg: TrainJobConfig, rank: int) -> Any | None:
    if rank != 0 or not cfg.tracking.run_id:
        return None
    from lmrec.tracking.mlflow_utils import RunLogger

    return RunLogger(cfg.tracking.run_id, cfg.tracking.tracking_uri)


def _curve_png(history: list[dict[str, float]], path: Path) -> Path | None:
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    keys = [k for k in history[-1] if k.endswith("full/ndcg@10")]
    if keys:
        ax2 = ax1.twinx()
        pts = [(h["epoch"], h[keys[0]]) for h in history if keys[0] in h]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], "s-", color="tab:orange", label=keys[0])
        ax2.set_ylabel(keys[0], color="tab:orange")
    ax1.set_title("lmrec training curve")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_training(
    cfg: TrainJobConfig, ctx: RunContext, loss_fn: LossFn = default_loss, model: SeqRecModel | None = None
) -> dict[str, Any]:
    """Train, validate each epoch, checkpoint, test, export. Returns the final metrics."""
    tc, ec = cfg.train, cfg.eval
    if not cfg.prepared_path:
        raise ValueError("prepared_path is not set: prepare the dataset before training")
    torch.manual_seed(tc.seed + ctx.rank)  # dropout/negatives differ per rank; init is seeded separately
    data = SequenceData.load(cfg.prepared_path, with_meta=False)
    features, id_mask = None, None
    if model is None and cfg.model.content.fused:
        features, id_mask = item_features(cfg, data)
    model_cfg = (
        cfg.model.build(data.num_items, features.text_dim, features.num_attributes)
        if features is not None
        else cfg.model.build(data.num_items)
        if model is None
        else model.config
    )
    setup = setup_model(model_cfg, tc, ctx.device, model, features, id_mask)
    state = TrainState()
    best_sd: dict[str, torch.Tensor] | None = None  # weights of the best validation epoch
    ckpt = ctx.latest_checkpoint()
    if ckpt is not None:
        with ckpt as directory:
            state, best_sd = load_checkpoint(setup.model, setup.optimizer, directory)
        state.restarts += 1
        if ctx.rank == 0:
            say(
                f"[lmrec.train] resumed from checkpoint at epoch {state.epoch} step {state.step_in_epoch} "
                f"(global step {state.global_step})"
            )

    inputs, targets = train_examples(data, model_cfg.max_seq_len, tc.sliding_window)
    steps_per_epoch = len(shard_batches(len(inputs), tc.batch_size, 0, ctx.world_size, 0, tc.seed))
    if tc.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, tc.max_steps_per_epoch)
    total_steps = steps_per_epoch * tc.epochs
    logger = _logger(cfg, ctx.rank)
    if logger and state.restarts:
        logger.tags({"lmrec.restarts": state.restarts})
    if ctx.rank == 0:
        say(
            f"[lmrec.train] {model_cfg.name} model, {model_cfg.num_parameters():,} parameters, "
            f"{len(inputs):,} training sequences, {ctx.world_size} worker(s), strategy {tc.strategy}, "
            f"{steps_per_epoch} steps/epoch, dtype {str(setup.dtype).removeprefix('torch.')}"
        )
    if (
        ctx.rank == 0
        and ctx.world_size == 1
        and tc.strategy == "fsdp"
        and dist.is_available()
        and dist.is_initialized()
    ):
        say(
            "[lmrec.train] note: FSDP2 over one worker shards nothing and only adds work (1.2-1.6x slower steps "
            "measured on an H200); train.strategy=none trains the same model faster on one worker"
        )
    samples_per_step = tc.batch_size * ctx.world_size
    progress = _Progress(total_steps, state.global_step, samples_per_step)
    gauge_tags = {"run": cfg.tracking.run_id or cfg.train.run_name or "local", "dataset": data.manifest["dataset"]}

    def write_checkpoint() -> str:
        tmp = tempfile.mkdtemp(prefix=f"lmrec-ckpt-r{ctx.rank}-")
        save_checkpoint(setup.model, setup.optimizer, state, tmp, best=best_sd)
        if ctx.rank == 0:  # enough to rebuild the model and its data without the job
            (Path(tmp) / MODEL_CONFIG_FILE).write_text(json.dumps(model_cfg.to_dict()))
            (Path(tmp) / JOB_CONFIG_FILE).write_text(json.dumps(to_dict(cfg)))
        return tmp

    def checkpoint(metrics: dict[str, Any]) -> None:
        ctx.report(metrics, write_checkpoint())

    eval_kwargs = dict(
        max_len=model_cfg.max_seq_len,
        ks=list(ec.ks),
        protocols=list(ec.protocols),
        batch_size=ec.batch_size,
        device=ctx.device,
        rank=ctx.rank,
        world_size=ctx.world_size,
        num_negatives=ec.num_negatives,
        seed=ec.seed,
        max_users=ec.max_users,
        dtype=setup.dtype,
        strategy=tc.strategy,
    )
    for epoch in range(state.epoch, tc.epochs if not state.stopped_early else state.epoch):
        batches = shard_batches(len(inputs), tc.batch_size, ctx.rank, ctx.world_size, epoch, tc.seed)[:steps_per_epoch]
        loss_sum, loss_n, t_epoch = 0.0, 0, time.time()
        carried = np.array(state.epoch_loss if state.step_in_epoch else [0.0, 0.0], dtype=np.float64)
        for step in range(state.step_in_epoch, steps_per_epoch):
            idx = batches[step]
            loss = train_step(
                setup,
                inputs[idx],
                targets[idx],
                ctx.device,
                lr_at(state.global_step, tc, total_steps),
                tc.grad_clip,
                tc.strategy,
                loss_fn,
            )
            loss_sum += loss
            loss_n += 1
            state.global_step += 1
            state.step_in_epoch = step + 1
            if ctx.rank == 0 and (state.global_step % tc.log_every_steps == 0 or step + 1 == steps_per_epoch):
                say(progress.line(epoch, tc.epochs, step + 1, steps_per_epoch, state.global_step, loss))
                ctx.publish(
                    {
                        "loss": loss,
                        "global_step": state.global_step,
                        "samples_per_s": progress.samples_per_s(state.global_step),
                    },
                    gauge_tags,
                )
            if (
                tc.checkpoint_every_steps
                and state.global_step % tc.checkpoint_every_steps == 0
                and step + 1 < steps_per_epoch
            ):
                part = all_reduce(np.array([loss_sum, loss_n], dtype=np.float64), ctx.device)
                state.epoch_loss = (carried + part).tolist()
                checkpoint({"epoch": epoch, "global_step": state.global_step, "train_loss": loss, "mid_epoch": 1})
        seconds = time.time() - t_epoch
        sums = carried + all_reduce(np.array([loss_sum, loss_n], dtype=np.float64), ctx.device)
        state.epoch_loss = [0.0, 0.0]
        row: dict[str, float] = {
            "epoch": epoch,
            "global_step": state.global_step,
            "train_loss": float(sums[0] / max(1, sums[1])),
            "samples_per_s": loss_n * samples_per_step / max(seconds, 1e-9),
            "epoch_seconds": seconds,  # training steps only (validation comes after)
            "lr": lr_at(state.global_step - 1, tc, total_steps),
        }
        if ec.every_epochs and ((epoch + 1) % ec.every_epochs == 0 or epoch + 1 == tc.epochs):
            row.update(evaluate(setup.model, data, "valid", **eval_kwargs))
            value = row[f"valid/{ec.select_metric}"]
            if state.best_metric is None or value > state.best_metric:
                state.best_metric, state.best_epoch, state.evals_since_best = value, epoch, 0
                if tc.select_best:
                    best_sd = {k: v.detach().clone() for k, v in get_model_state_dict(setup.model).items()}
            else:
                state.evals_since_best += 1
        state.epoch, state.step_in_epoch = epoch + 1, 0
        state.epochs_completed.append(epoch)
        state.history.append(row)
        if logger:
            logger.metrics(row, step=epoch)
        if ctx.rank == 0:
            shown = {k: round(v, 4) for k, v in row.items() if k.endswith(("ndcg@10", "hr@10"))}
            say(
                f"[lmrec.train] epoch {epoch + 1}/{tc.epochs} done: loss {row['train_loss']:.4f}, "
                f"{row['samples_per_s']:,.0f} samples/s, {seconds:.1f}s {shown}"
            )
        if ctx.rank == 0:
            ctx.publish({k: v for k, v in row.items() if isinstance(v, (int, float))}, gauge_tags)
        save = bool(tc.checkpoint_every_epochs) and (epoch + 1) % tc.checkpoint_every_epochs == 0
        ctx.report({**row, "epochs_completed": len(state.epochs_completed)}, write_checkpoint() if save else None)
        if tc.early_stopping_patience and state.evals_since_best >= tc.early_stopping_patience:
            if ctx.rank == 0:
                say(
                    f"[lmrec.train] early stop after epoch {epoch + 1}: no {ec.select_metric} gain in "
                    f"{state.evals_since_best} validations (best {state.best_metric:.4f} at epoch {state.best_epoch + 1})"
                )
            state.stopped_early = True
            break

    if tc.select_best and best_sd is not None and state.best_epoch != state.epochs_completed[-1]:
        set_model_state_dict(setup.model, best_sd)  # test and export the best validation epoch
        if ctx.rank == 0:
            say(
                f"[lmrec.train] restored the best validation epoch {state.best_epoch + 1} "
                f"({ec.select_metric} {state.best_metric:.4f})"
            )

    # Final evaluation on valid and test, then export the model from rank 0.
    final: dict[str, Any] = {}
    final.update(evaluate(setup.model, data, "valid", **eval_kwargs))
    final.update(evaluate(setup.model, data, "test", **eval_kwargs))
    bytes_ = state_bytes(setup.model, setup.optimizer)
    final.update(
        {
            "global_step": state.global_step,
            "epochs_completed": len(state.epochs_completed),
            "restarts": state.restarts,
            "best_epoch": -1 if state.best_epoch is None else state.best_epoch,
            "rank0_state_bytes": bytes_["total"],
        }
    )
    export_dir = Path(tempfile.mkdtemp(prefix="lmrec-export-")) / EXPORT_DIR
    exported = export_model(
        setup,
        export_dir,
        data.manifest["item_ids"],
        {
            "dataset": data.manifest["dataset"],
            "dataset_hash": data.manifest["config_hash"],
            "data_config": to_dict(cfg.data),
            "metrics": {k: v for k, v in final.items() if "/" in k},
            "train_run_id": cfg.tracking.run_id,
            "global_step": state.global_step,
            "item_content": content_meta(cfg, features, id_mask),
        },
        ctx.rank,
    )
    if ctx.rank == 0:
        ctx.publish({f"final/{k}": v for k, v in final.items() if "/" in k}, gauge_tags)
    if logger:
        logger.metrics({f"final/{k}": v for k, v in final.items()}, step=state.global_step)
        png = _curve_png(state.history, export_dir.parent / "training_curve.png")
        if png:
            logger.artifact(png)
        logger.json({"epochs": state.history, "final": final}, "metrics.json")
        if exported:
            from lmrec.tracking.mlflow_utils import MODEL_ARTIFACT_PATH

            logger.artifacts(exported, MODEL_ARTIFACT_PATH)
    # The final checkpoint also carries the exported model, so `lmrec evaluate` can use it.
    tmp = write_checkpoint()
    if exported:
        shutil.copytree(exported, Path(tmp) / EXPORT_DIR)
    ctx.report({**final, "final": 1}, tmp)
    if exported:
        shutil.rmtree(export_dir.parent, ignore_errors=True)
    return final


def item_features(cfg: TrainJobConfig, data: SequenceData) -> tuple[ItemFeatures, np.ndarray]:
    """The fused model's item features and ID mask (items with training interactions)."""
    c = cfg.model.content
    if c.text and not cfg.text_embeddings_path:
        raise ValueError("model.content.text is set but no text embeddings were computed (text_embeddings_path)")
    features = load_item_features(
        cfg.prepared_path, cfg.text_embeddings_path if c.text else None, c.attributes, c.max_attributes
    )
    return features, id_mask_from_counts(data.train_item_counts())


def content_meta(
    cfg: TrainJobConfig, features: ItemFeatures | None, id_mask: np.ndarray | None
) -> dict[str, Any] | None:
    """What serving needs to represent a new item as training did: encoder, attribute vocabulary."""
    if features is None:
        return None
    c = cfg.model.content
    return {
        "fusion": c.fusion,
        "text_encoder": c.text,
        "text_normalised": True,
        "attributes": c.attributes,
        "attribute_vocab": features.attribute_vocab,
        "max_attributes": c.max_attributes,
        "items_without_id": int((id_mask[1:] == 0).sum()) if id_mask is not None else 0,
        "features": features.stats,
    }


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: `config` is a TrainJobConfig as a plain dict."""
    cfg = from_dict(TrainJobConfig, config)
    run_training(cfg, RayTrainContext())


def job_config_dict(cfg: TrainJobConfig) -> dict[str, Any]:
    return to_dict(cfg)
