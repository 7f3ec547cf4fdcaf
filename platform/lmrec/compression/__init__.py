"""Model compression: distillation, quantization, pruning, and their latency/size measurement.

Below the training loop: no ray, no torch.distributed and no lmrec.training here (import-linter
contracts in pyproject.toml). Training a variant (`lmrec.training.compress.build_variant`) runs
the training loop with a distillation `LossFn` from here; a Tune trial runs the same pieces on
Ray Train. Serving loads any variant with `load_variant(dir)`.
"""

from lmrec.compression.artifacts import load_variant, parameter_count, save_variant, weight_bytes
from lmrec.compression.distill import TeacherTopK, check_teacher_catalog, distillation_loss, soft_kl
from lmrec.compression.latency import LatencyConfig, measure_latencies, measure_latency
from lmrec.compression.prune import (
    StructuredPlan,
    magnitude_prune,
    masked_reference,
    prune,
    prune_structured,
    sparsity,
)
from lmrec.compression.quantize import Int8Linear, cast_weights, quantize, quantize_int8
from lmrec.compression.spec import CompressionSpec
from lmrec.compression.variant import calibration_batch, masked_loss, starting_model, training_steps

__all__ = [
    "CompressionSpec",
    "Int8Linear",
    "LatencyConfig",
    "StructuredPlan",
    "TeacherTopK",
    "calibration_batch",
    "cast_weights",
    "check_teacher_catalog",
    "distillation_loss",
    "load_variant",
    "magnitude_prune",
    "masked_loss",
    "masked_reference",
    "measure_latencies",
    "measure_latency",
    "parameter_count",
    "prune",
    "prune_structured",
    "quantize",
    "quantize_int8",
    "save_variant",
    "soft_kl",
    "sparsity",
    "starting_model",
    "training_steps",
    "weight_bytes",
]
