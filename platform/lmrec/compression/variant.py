"""The pieces a compressed variant is built from (no training loop, no Ray).

Where a training run starts (`starting_model`: a fresh student or the pruned teacher), how
many steps it needs, a loss that keeps magnitude-pruned weights at zero, and calibration
rows for structured pruning. `lmrec.training.compress.build_variant` runs the training
stages with the training loop; a Tune trial runs them as a Ray Train run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmrec.compression.distill import LossFn
from lmrec.compression.prune import apply_masks_, prune
from lmrec.compression.spec import CompressionSpec
from lmrec.data.sequences import SequenceData, train_examples
from lmrec.models.seqrec import SeqRecModel, init_weights_


def masked_loss(loss_fn: LossFn, masks: dict[str, torch.Tensor]) -> LossFn:
    """Re-zero magnitude-pruned weights before every step, so fine-tuning keeps the sparsity.

    Unsharded models only (single process or DDP): FSDP shards are not masked.
    """

    def fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        apply_masks_(model, masks)
        return loss_fn(model, inputs, targets)

    return fn


def trained_key(spec: CompressionSpec) -> str:
    """Identity of everything before quantization: variants equal up to `quantize` share it."""
    fields = {k: v for k, v in spec.to_dict().items() if k not in ("name", "quantize")}
    return json.dumps(fields, sort_keys=True)


def starting_model(
    spec: CompressionSpec, teacher: SeqRecModel, seed: int, calib_inputs: torch.Tensor | None = None
) -> tuple[SeqRecModel, dict[str, torch.Tensor] | None, dict[str, Any]]:
    """Where a single-phase training run starts: a fresh student, or the (pruned) teacher.

    For Ray Train workers (a Tune trial is one training run): a student is trained
    for `distill_steps`, a pruned teacher fine-tuned for `finetune_steps` (see
    `training_steps`); a spec with both a student and pruning needs two phases, which
    `lmrec.training.compress.build_variant` does in-process. Deterministic, so every rank starts from the same
    weights. Returns (model, magnitude keep-masks or None, JSON-friendly info).
    """
    if spec.has_student:
        model = SeqRecModel(spec.student_config(teacher.config))
        init_weights_(model, seed)
        if spec.prune != "none":
            raise ValueError(f"variant {spec.name}: prune the teacher or train a student, not both")
        return model, None, {"start": "student"}
    model, pinfo = prune(teacher, spec.prune, spec.prune_amount, calib_inputs=calib_inputs)
    masks = pinfo.pop("masks", None)
    return model, masks, {"start": "teacher", "prune": pinfo}  # type: ignore[return-value]


def training_steps(spec: CompressionSpec) -> int:
    """Optimisation steps a variant needs: the student's distillation, or the pruned model's fine-tune."""
    return spec.distill_steps if spec.has_student else spec.finetune_steps


def calibration_batch(prepared_path: str | Path, max_len: int, n: int = 256, seed: int = 0) -> torch.Tensor:
    """(n, max_len) training input rows for activation-based pruning importance."""
    data = SequenceData.load(prepared_path, with_meta=False)
    inputs, _ = train_examples(data, max_len)
    rng = np.random.default_rng(seed)
    sel = rng.choice(len(inputs), size=min(n, len(inputs)), replace=False)
    return torch.from_numpy(inputs[np.sort(sel)])
