"""`CompressionSpec`: one compressed variant of a teacher, as a typed, self-validating config.

A variant is built in this order: (1) a smaller student distilled from the teacher,
or the teacher itself; (2) pruning, optionally followed by a distillation
fine-tune that recovers quality; (3) post-training quantization. The Tune search
samples these fields; the benchmark lists them in YAML.
"""

from __future__ import annotations

from typing import Any, Literal

from lmrec.config import ConfigModel, check, to_dict
from lmrec.models.config import SeqRecConfig

PruneKind = Literal["none", "magnitude", "structured"]
QuantMode = Literal["none", "int8", "fp16", "bf16"]


class CompressionSpec(ConfigModel):
    """Student shape, distillation, pruning, quantization and training budget of one variant."""

    name: str = "variant"
    # student (all None = compress the teacher itself)
    student_layers: int | None = None
    student_hidden: int | None = None
    student_heads: int | None = None
    student_ffn: int | None = None  # None = 4 x student width when the width changes, else the teacher's
    distill_steps: int = 0  # optimisation steps training the student (needed when there is one)
    # distillation (student training and pruning fine-tunes)
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft (KL) term; 0 = plain training on ground truth
    teacher_topk: int = 0  # > 0: KL over the teacher's top-k items per position (memory); 0 = full catalog
    # pruning
    prune: PruneKind = "none"
    prune_amount: float = 0.0  # magnitude: sparsity; structured: fraction of heads and FFN channels removed
    finetune_steps: int = 0  # recovery steps after pruning (distillation from the teacher)
    # quantization (post-training, last)
    quantize: QuantMode = "none"

    def validate_config(self) -> None:
        check(bool(self.name) and "/" not in self.name, "name", "must be a non-empty name without '/'")
        for key in ("student_layers", "student_hidden", "student_heads", "student_ffn"):
            v = getattr(self, key)
            check(v is None or v >= 1, key, f"must be >= 1 or null, got {v}")
        check(self.distill_steps >= 0, "distill_steps", "must be >= 0")
        check(
            not self.has_student or self.distill_steps >= 1,
            "distill_steps",
            "a student (student_layers/hidden/heads/ffn set) needs distill_steps >= 1",
        )
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        check(0.0 <= self.alpha <= 1.0, "alpha", f"must be in [0, 1], got {self.alpha}")
        check(self.teacher_topk >= 0, "teacher_topk", "must be >= 0")
        check(0.0 <= self.prune_amount < 1.0, "prune_amount", f"must be in [0, 1), got {self.prune_amount}")
        check(self.prune != "none" or self.prune_amount == 0.0, "prune_amount", "must be 0 when prune is 'none'")
        check(self.finetune_steps >= 0, "finetune_steps", "must be >= 0")
        check(
            self.prune != "none" or self.finetune_steps == 0,
            "finetune_steps",
            "fine-tune steps follow pruning; set prune, or train a student with distill_steps",
        )

    @property
    def has_student(self) -> bool:
        return any(
            v is not None for v in (self.student_layers, self.student_hidden, self.student_heads, self.student_ffn)
        )

    def student_config(self, teacher: SeqRecConfig) -> SeqRecConfig:
        """The student's model config: the teacher's with the student fields replaced."""
        hidden = self.student_hidden or teacher.hidden_size
        heads = self.student_heads or (teacher.num_heads if hidden == teacher.hidden_size else max(1, hidden // 64))
        if self.student_ffn is not None:
            ffn = self.student_ffn
        else:
            ffn = teacher.ffn_size if hidden == teacher.hidden_size else 4 * hidden
        kv = teacher.num_kv_heads if (teacher.num_kv_heads and heads % teacher.num_kv_heads == 0) else None
        return teacher.replace(  # validated
            hidden_size=hidden,
            num_layers=self.student_layers or teacher.num_layers,
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=None,
            intermediate_size=ffn,
            name=f"student-{self.name}",
        )

    def describe(self) -> dict[str, Any]:
        """Flat tags for MLflow / the registry (only the parts that are in use)."""
        out: dict[str, Any] = {"compression.name": self.name}
        if self.has_student:
            for key in ("student_layers", "student_hidden", "student_heads", "student_ffn", "distill_steps"):
                if getattr(self, key) is not None:
                    out[f"compression.{key}"] = getattr(self, key)
        if self.has_student or self.finetune_steps:
            out.update(
                {
                    "compression.temperature": self.temperature,
                    "compression.alpha": self.alpha,
                    "compression.teacher_topk": self.teacher_topk,
                }
            )
        if self.prune != "none":
            out.update(
                {
                    "compression.prune": self.prune,
                    "compression.prune_amount": self.prune_amount,
                    "compression.finetune_steps": self.finetune_steps,
                }
            )
        out["compression.quantize"] = self.quantize
        return out

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
