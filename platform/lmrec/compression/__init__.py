"""Model compression: distillation, quantization, pruning, and their latency/size measurement.

Ray-free (the layout test forbids ray and torch.distributed imports here). Training
steps reuse `lmrec.training.loop` through a distillation `LossFn`.

Serving loads any variant with `load_variant(dir)`; the Tune job builds variants
from a `CompressionSpec` with `build_variant` (or its pieces).
"""

from lmrec.compression.artifacts import load_variant, parameter_count, save_variant, weight_bytes
from lmrec.compression.distill import TeacherTopK, check_teacher_catalog, distillation_loss, soft_kl
from lmrec.compression.latency import LatencyConfig, measure_latencies, measure_latency
from lmrec.compression.pipeline import VariantResult, build_variant, starting_model, training_steps
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

__all__ = [
    "CompressionSpec",
    "Int8Linear",
    "LatencyConfig",
    "StructuredPlan",
    "TeacherTopK",
    "VariantResult",
    "build_variant",
    "cast_weights",
    "check_teacher_catalog",
    "distillation_loss",
    "load_variant",
    "magnitude_prune",
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
