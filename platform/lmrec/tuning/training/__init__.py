"""Ray Tune search over training hyperparameters (ASHA + Optuna), each trial the standard training loop."""

from lmrec.tuning.training.config import TrainSearchConfig, TrainSpace, TuneTrainConfig

__all__ = ["TrainSearchConfig", "TrainSpace", "TuneTrainConfig", "run_train_search"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    if name == "run_train_search":  # imports Ray on use only
        from lmrec.tuning.training.driver import run_train_search

        return run_train_search
    raise AttributeError(name)
