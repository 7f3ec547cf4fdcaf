"""The training loop, built from small pieces that tuning and distillation reuse.

Pieces: `setup_model` (build, init, shard, optimizer), `train_step` (one
optimisation step with a pluggable loss), `evaluate` (distributed full-ranking and
sampled metrics), `export_model` (gather full weights to rank 0 as safetensors).
`run_training` strings them together and talks to its environment only through a
`RunContext`: `RayTrainContext` under Ray Train, `LocalContext` in-process. So
the loop runs without a cluster (tests, benchmarks) exactly as it runs on one.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

from lmrec.config import from_dict, to_dict
from lmrec.data.sequences import SequenceData, shard_batches, train_examples, trim_padding
from lmrec.evaluation.metrics import metric_sums, sums_to_metrics
from lmrec.evaluation.protocols import rank_batch
from lmrec.models.artifacts import save_model_dir
from lmrec.models.config import SeqRecConfig
from lmrec.models.seqrec import SeqRecModel, init_weights_
from lmrec.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from lmrec.training.config import TrainConfig, TrainJobConfig
from lmrec.training.sharding import autocast, resolve_precision, state_bytes, unwrap, wrap_model

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
MODEL_CONFIG_FILE = "model_config.json"
JOB_CONFIG_FILE = "job_config.json"
EXPORT_DIR = "export"


# ------------------------------------------------------------------ environment


class RunContext(Protocol):
    """What the loop needs from where it runs."""

    rank: int
    world_size: int
    device: torch.device

    def latest_checkpoint(self) -> Any | None:
        """A context manager yielding a local folder, or None."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        """Publish metrics (and a checkpoint folder this rank wrote)."""

    def publish(self, values: dict[str, float], tags: dict[str, str]) -> None:
        """Live gauges for monitoring (Prometheus under Ray); may be a no-op."""


class LocalContext:
    """No Ray: one process, or one rank of a plain torch.distributed group (torchrun).

    Checkpoints go to `root/checkpoint_<step>`; with several ranks each rank's shard
    files land in the same folder, as Ray Train merges them.
    """

    def __init__(self, root: str | Path | None = None, device: str = "cpu") -> None:
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if distributed else 0
        self.world_size = dist.get_world_size() if distributed else 1
        self.device = torch.device(device)
        self.root = Path(root) if root else None
        self.reports: list[dict[str, Any]] = []
        self.checkpoints: list[Path] = []

    def latest_checkpoint(self) -> Any | None:
        if self.root is None:
            return None
        found = sorted(self.root.glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[1]))
        if not found:
            return None
        from contextlib import nullcontext

        return nullcontext(str(found[-1]))

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir and self.root is not None:
            dst = self.root / f"checkpoint_{metrics.get('global_step', len(self.reports)):08d}"
            if dst.exists() and self.world_size == 1:
                shutil.rmtree(dst)
            shutil.copytree(checkpoint_dir, dst, dirs_exist_ok=True)
            self.checkpoints.append(dst)
        if checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def publish(self, values: dict[str, float], tags: dict[str, str]) -> None:
        return None


class RayTrainContext:
    """Inside a Ray Train worker (Train V2 APIs)."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def latest_checkpoint(self) -> Any | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        return ckpt.as_directory() if ckpt is not None else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train
        from ray.train import Checkpoint

        ckpt = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)
        if checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    _gauges: dict[str, Any] = {}

    def publish(self, values: dict[str, float], tags: dict[str, str]) -> None:
        """Gauges on Ray's Prometheus endpoint: lmrec_train_<name>{run, rank, ...}."""
        from ray.util import metrics

        for name, value in values.items():
            key = "lmrec_train_" + "".join(c if c.isalnum() else "_" for c in name)
            gauge = self._gauges.get(key)
            if gauge is None:
                gauge = metrics.Gauge(key, description=f"lmrec training: {name}", tag_keys=tuple(sorted(tags)))
                self._gauges[key] = gauge
            gauge.set(float(value), tags=tags)


# ------------------------------------------------------------------ pieces


@dataclass
class Setup:
    model: nn.Module  # possibly wrapped (DDP) or sharded in place (FSDP2)
    optimizer: torch.optim.Optimizer
    config: SeqRecConfig
    dtype: torch.dtype


def setup_model(
    model_cfg: SeqRecConfig, train: TrainConfig, device: torch.device, model: SeqRecModel | None = None
) -> Setup:
    """Build (or take) the model, initialise it identically on every rank, shard it, make AdamW."""
    if model is None:
        model = SeqRecModel(model_cfg)
        init_weights_(model, train.seed)
    dtype = resolve_precision(train.precision, device)
    wrapped = wrap_model(model, train.strategy, device, dtype)
    optimizer = torch.optim.AdamW(
        [p for p in wrapped.parameters() if p.requires_grad],
        lr=train.lr,
        betas=(train.betas[0], train.betas[1]),
        weight_decay=train.weight_decay,
    )
    return Setup(wrapped, optimizer, model_cfg, dtype)


def lr_at(step: int, train: TrainConfig, total_steps: int) -> float:
    """Learning rate for global step `step` (stateless, so resume needs no scheduler state)."""
    if train.warmup_steps and step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.schedule == "cosine" and total_steps > train.warmup_steps:
        progress = (step - train.warmup_steps) / max(1, total_steps - train.warmup_steps)
        return train.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return train.lr


def default_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return model(inputs, targets=targets)


def train_step(
    setup: Setup,
    inputs: np.ndarray,
    targets: np.ndarray,
    device: torch.device,
    lr: float,
    grad_clip: float,
    strategy: str,
    loss_fn: LossFn = default_loss,
) -> float:
    """One optimisation step on a (B, L) batch; returns the loss."""
    inputs, targets = trim_padding(inputs, targets)
    x = torch.from_numpy(inputs).to(device, non_blocking=True)
    y = torch.from_numpy(targets).to(device, non_blocking=True)
    for group in setup.optimizer.param_groups:
        group["lr"] = lr
    setup.model.train()
    with autocast(device, setup.dtype, strategy):
        loss = loss_fn(setup.model, x, y)
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(setup.model.parameters(), grad_clip)
    setup.optimizer.step()
    return float(loss.detach())


def _all_reduce(values: np.ndarray, device: torch.device) -> np.ndarray:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.cpu().numpy()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: SequenceData,
    split: str,
    max_len: int,
    ks: list[int],
    protocols: list[str],
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    num_negatives: int = 100,
    seed: int = 0,
    max_users: int | None = None,
    dtype: torch.dtype = torch.float32,
    strategy: str = "none",
) -> dict[str, float]:
    """Metrics over all users, each rank ranking users rank::world_size.

    Every rank runs the same number of forward passes (FSDP gathers weights
    collectively), padding its last batches with a dummy user it then ignores.
    """
    model.eval()
    total = data.num_users if max_users is None else min(max_users, data.num_users)
    mine = np.arange(rank, total, world_size)
    per_rank = -(-total // world_size)
    n_batches = -(-per_rank // batch_size)

    def scorer(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype, strategy):
            return model(x).float()

    out: dict[str, float] = {}
    for protocol in protocols:
        rng = np.random.default_rng([seed, rank])
        sums = np.zeros(len(ks) * 2 + 2)  # metric sums + user count
        for b in range(n_batches):
            users = mine[b * batch_size : (b + 1) * batch_size]
            dummy = len(users) == 0
            ranks = rank_batch(
                scorer,
                data,
                users if not dummy else np.array([0]),
                split,
                max_len,
                device,
                protocol,
                num_negatives,
                rng,
            )
            if not dummy:
                sums[:-1] += metric_sums(ranks, ks)
                sums[-1] += len(users)
        sums = _all_reduce(sums, device)
        for name, value in sums_to_metrics(sums[:-1], int(sums[-1]), ks).items():
            out[f"{split}/{protocol}/{name}"] = value
    model.train()
    return out


def export_model(
    setup: Setup, directory: str | Path, item_ids: list[int], metadata: dict[str, Any], rank: int
) -> Path | None:
    """Collective: gather full weights; rank 0 writes the safetensors artifact folder."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if dist.is_available() and dist.is_initialized():
        sd = get_model_state_dict(setup.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = {k: v.detach().cpu() for k, v in unwrap(setup.model).state_dict().items()}
    if rank != 0:
        return None
    sd = {k.removeprefix("module."): v.float() for k, v in sd.items()}
    return save_model_dir(directory, setup.config, sd, item_ids, metadata)


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
    model_cfg = cfg.model.build(data.num_items) if model is None else model.config
    setup = setup_model(model_cfg, tc, ctx.device, model)
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
                part = _all_reduce(np.array([loss_sum, loss_n], dtype=np.float64), ctx.device)
                state.epoch_loss = (carried + part).tolist()
                checkpoint({"epoch": epoch, "global_step": state.global_step, "train_loss": loss, "mid_epoch": 1})
        seconds = time.time() - t_epoch
        sums = carried + _all_reduce(np.array([loss_sum, loss_n], dtype=np.float64), ctx.device)
        state.epoch_loss = [0.0, 0.0]
        row: dict[str, float] = {
            "epoch": epoch,
            "global_step": state.global_step,
            "train_loss": float(sums[0] / max(1, sums[1])),
            "samples_per_s": loss_n * samples_per_step / max(seconds, 1e-9),
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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: `config` is a TrainJobConfig as a plain dict."""
    cfg = from_dict(TrainJobConfig, config)
    run_training(cfg, RayTrainContext())


def job_config_dict(cfg: TrainJobConfig) -> dict[str, Any]:
    return to_dict(cfg)
