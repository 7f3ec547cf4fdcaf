"""The compression search space as Optuna sees it: a define-by-run function of a trial."""

from __future__ import annotations

from typing import Any

from lmrec.config import to_dict
from lmrec.tuning.compression.config import CompressionSpace


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
