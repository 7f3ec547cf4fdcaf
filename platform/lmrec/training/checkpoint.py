"""Training checkpoints with torch.distributed.checkpoint (DCP).

Each rank writes its shard files into its own local folder; rank 0 also writes
DCP's `.metadata` and `train_state.json`, and every rank writes its RNG state.
Ray Train merges the folders of all ranks into one checkpoint directory in
storage, and uploads it only after the files are complete, so a crash while
saving never leaves a checkpoint that resume would pick up half-written.

Checkpoints are not pickle-free: DCP writes `.metadata` with `pickle.dump` and reads it with
`pickle.load` (`FileSystemReader.read_metadata`, called by `dcp.load` and `_has_best`), and it
stores the optimizer's non-tensor entries (`param_groups`: lr, betas, ...) with `torch.save` and
loads them with `torch.load(weights_only=False)`; only tensors load with `weights_only=True`.
Loading a checkpoint can run code from it, so resume only from checkpoints you wrote. Registry
model artifacts (`lmrec.models.artifacts`) hold no pickle.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

STATE_FILE = "train_state.json"


@dataclass
class TrainState:
    """Where training is: the next step to run and what has been done so far."""

    epoch: int = 0  # next epoch to run (== epochs completed)
    step_in_epoch: int = 0  # steps of `epoch` already done
    global_step: int = 0
    epochs_completed: list[int] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)  # one row per completed epoch
    restarts: int = 0
    # (sum, count) of train losses over all ranks for the steps of `epoch` already done,
    # so an epoch interrupted mid-way still reports the mean over all of its steps
    epoch_loss: list[float] = field(default_factory=lambda: [0.0, 0.0])
    best_epoch: int | None = None  # epoch whose weights are kept as "best" (validation metric)
    best_metric: float | None = None
    evals_since_best: int = 0
    stopped_early: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        return cls(**json.loads(text))


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def save_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    directory: str | Path,
    best: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Collective: every rank must call it. Writes this rank's part into `directory`.

    `best` (a model state dict, possibly sharded) is saved alongside, so the
    best-validation weights survive a restart.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    payload: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    if best is not None:
        payload["best_model"] = best
    dcp.save(payload, checkpoint_id=str(directory))
    rank = _rank()
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(directory / f"rng-rank{rank}.safetensors"))
    if rank == 0:
        tmp = directory / (STATE_FILE + ".tmp")
        tmp.write_text(state.to_json())
        os.replace(tmp, directory / STATE_FILE)
    return directory


def _has_best(directory: Path) -> bool:
    keys = dcp.FileSystemReader(str(directory)).read_metadata().state_dict_metadata
    return any(k.startswith("best_model.") for k in keys)


def load_checkpoint(
    model: nn.Module, optimizer: torch.optim.Optimizer, directory: str | Path
) -> tuple[TrainState, dict[str, torch.Tensor] | None]:
    """Collective: restore model, optimizer and this rank's RNG; return (state, best weights or None)."""
    directory = Path(directory)
    state = TrainState.from_json((directory / STATE_FILE).read_text())
    model_sd, optim_sd = get_state_dict(model, optimizer)
    sd: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    if state.best_epoch is not None and _has_best(directory):  # absent when select_best is off
        sd["best_model"] = {k: v.detach().clone() for k, v in model_sd.items()}
    dcp.load(sd, checkpoint_id=str(directory))
    set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    rng_file = directory / f"rng-rank{_rank()}.safetensors"
    if rng_file.exists():
        rng = load_file(str(rng_file))
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return state, sd.get("best_model")


def read_state(directory: str | Path) -> TrainState | None:
    path = Path(directory) / STATE_FILE
    return TrainState.from_json(path.read_text()) if path.exists() else None
