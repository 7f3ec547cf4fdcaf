"""The training search space as Optuna sees it: a define-by-run function of a trial."""

from __future__ import annotations

from typing import Any

from lmrec.config import to_dict
from lmrec.tuning.training.config import TrainSpace


class DefineTrainSpace:
    """Optuna define-by-run space (a module-level class: Tune pickles the searcher)."""

    def __init__(self, space: TrainSpace) -> None:
        self.space = to_dict(space)

    def __call__(self, trial: Any) -> None:
        sp = self.space
        trial.suggest_float("lr", sp["lr"][0], sp["lr"][1], log=True)
        trial.suggest_float("dropout", sp["dropout"][0], sp["dropout"][1])
        for key in ("weight_decay", "hidden_size", "num_layers", "batch_size", "fusion"):
            if sp[key]:
                trial.suggest_categorical(key, list(sp[key]))
        if sp["id_dropout"]:
            trial.suggest_float("id_dropout", sp["id_dropout"][0], sp["id_dropout"][1])
        return None


def overrides(params: dict[str, Any]) -> list[str]:
    """A sampled point as dotted config overrides of the base training job."""
    where = {
        "lr": "train.lr",
        "weight_decay": "train.weight_decay",
        "batch_size": "train.batch_size",
        "dropout": "model.dropout",
        "hidden_size": "model.hidden_size",
        "num_layers": "model.num_layers",
        "id_dropout": "model.content.id_dropout",
        "fusion": "model.content.fusion",
    }
    return [f"{where[k]}={v}" for k, v in params.items() if k in where]
