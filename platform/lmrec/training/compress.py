"""Build one compressed variant from a teacher with the training loop, in-process (no Ray).

student (distilled with the training loop's own pieces) -> prune (+ recovery fine-tune by
distillation) -> quantize. Training goes through `lmrec.training.loop.run_training` with a
distillation `LossFn` and a `RunContext`: `LocalContext` here and in the benchmark,
`RayTrainContext` when a Tune trial drives a Ray Train run. Nothing of the loop is copied.
This lives in training/ because compression/ stays below the training loop.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmrec.compression.distill import LossFn, distillation_loss
from lmrec.compression.prune import apply_masks_, prune
from lmrec.compression.quantize import quantize
from lmrec.compression.spec import CompressionSpec
from lmrec.compression.variant import masked_loss, trained_key
from lmrec.config import evolve
from lmrec.data.sequences import SequenceData, train_examples
from lmrec.evaluation.config import EvalConfig
from lmrec.models.seqrec import SeqRecModel, init_weights_
from lmrec.training.config import TrainConfig, TrainJobConfig
from lmrec.training.context import LocalContext
from lmrec.training.loop import run_training


@dataclass
class VariantResult:
    """The compressed model and what it took to build it."""

    spec: CompressionSpec
    model: SeqRecModel
    info: dict[str, Any] = field(default_factory=dict)  # JSON-friendly: steps, pruning, train metrics, seconds


def steps_to_schedule(total_steps: int, num_examples: int, train: TrainConfig) -> TrainConfig:
    """A TrainConfig whose epochs x max_steps_per_epoch covers `total_steps` (one worker).

    The loop counts in epochs; a step budget becomes ceil(steps / steps_per_epoch)
    epochs of at most ceil(steps / epochs) steps, so it runs >= total_steps and
    fewer than total_steps + epochs.
    """
    per_epoch = max(1, math.ceil(num_examples / (train.batch_size * train.num_workers)))
    epochs = max(1, math.ceil(total_steps / per_epoch))
    cap = math.ceil(total_steps / epochs)
    return evolve(train, epochs=epochs, max_steps_per_epoch=min(cap, per_epoch))


def train_with(
    model: SeqRecModel,
    loss_fn: LossFn,
    steps: int,
    prepared_path: str | Path,
    train: TrainConfig,
    eval_cfg: EvalConfig,
    ctx: Any | None = None,
) -> dict[str, Any]:
    """Run the standard training loop on `model` (in place, one process) for about `steps` steps."""
    data = SequenceData.load(prepared_path, with_meta=False)
    n = len(train_examples(data, model.config.max_seq_len, train.sliding_window)[0])
    tc = steps_to_schedule(steps, n, evolve(train, strategy="none", num_workers=1))
    ec = evolve(eval_cfg, every_epochs=0)  # the caller evaluates the finished variant
    cfg = TrainJobConfig(train=tc, eval=ec, prepared_path=str(prepared_path))
    return run_training(cfg, ctx or LocalContext(), loss_fn=loss_fn, model=model)


def build_variant(
    spec: CompressionSpec,
    teacher: SeqRecModel,
    prepared_path: str | Path,
    train: TrainConfig,
    eval_cfg: EvalConfig,
    calib_inputs: torch.Tensor | None = None,
    cache: dict[str, tuple[SeqRecModel, dict[str, Any]]] | None = None,
) -> VariantResult:
    """Build `spec` from `teacher` (left in eval mode) on the prepared dataset at `prepared_path`.

    `cache` (optional, caller-owned) keeps the float model after the training stages,
    so e.g. "student" and "student + int8" train the student once.
    """
    t0 = time.time()
    teacher = teacher.float().eval()
    key = trained_key(spec)
    if cache is not None and key in cache:
        model, info = (
            copy.deepcopy(cache[key][0]),
            {**copy.deepcopy(cache[key][1]), "spec": spec.to_dict(), "reused_training": True},
        )
        model = quantize(model.eval(), spec.quantize)
        info["build_seconds"] = round(time.time() - t0, 2)
        return VariantResult(spec, model, info)
    info: dict[str, Any] = {"spec": spec.to_dict()}
    if spec.has_student:
        model = SeqRecModel(spec.student_config(teacher.config))
        init_weights_(model, train.seed)
        loss = distillation_loss(teacher, spec.temperature, spec.alpha, spec.teacher_topk)
        out = train_with(model, loss, spec.distill_steps, prepared_path, train, eval_cfg)
        info["distill"] = {"steps": out["global_step"], "valid_ndcg@10": out.get("valid/full/ndcg@10")}
    else:
        model = copy.deepcopy(teacher)
    if spec.prune != "none":
        model, pinfo = prune(model, spec.prune, spec.prune_amount, calib_inputs=calib_inputs)
        masks = pinfo.pop("masks", None)
        if spec.finetune_steps:
            loss = distillation_loss(teacher, spec.temperature, spec.alpha, spec.teacher_topk)
            if masks is not None:
                loss = masked_loss(loss, masks)
            out = train_with(model, loss, spec.finetune_steps, prepared_path, train, eval_cfg)
            if masks is not None:
                apply_masks_(model, masks)  # the last optimizer step moved pruned weights off zero
            pinfo["finetune_steps_run"] = out["global_step"]
        info["prune"] = pinfo
    if cache is not None:
        cache[key] = (copy.deepcopy(model).eval(), copy.deepcopy(info))
    model = quantize(model.eval(), spec.quantize)
    info["build_seconds"] = round(time.time() - t0, 2)
    return VariantResult(spec, model, info)
