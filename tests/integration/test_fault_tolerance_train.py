"""A training worker process is SIGKILLed mid-run: Ray Train restarts the worker group, the
loop resumes from the last registered checkpoint, and no epoch or step is lost or repeated.

That a resumed run ends bitwise where an uninterrupted one does (same weights, same epoch
losses, the interrupted epoch's running sums carried in the checkpoint) is proven on the
training loop itself, without Ray, by tests/unit/test_training_loop.py::
test_resume_after_crash_matches_uninterrupted_run; training a second, uninterrupted run on
the cluster here would only repeat it at the cost of a whole Ray Train job."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from lmrec.config import load_config
from lmrec.training.checkpoint import read_state
from lmrec.training.config import TrainJobConfig
from lmrec.training.trainer import run_train_job

pytestmark = pytest.mark.integration


def _worker_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return [a.pid for a in actors if a.pid]


def test_killed_worker_resumes_from_checkpoint(synthetic_prepared, tmp_path: Path) -> None:
    data_cfg, _ = synthetic_prepared
    storage = tmp_path / "storage"
    job = load_config(
        TrainJobConfig,
        None,
        [
            "train.epochs=3",
            "train.num_workers=2",
            "train.batch_size=16",
            "train.checkpoint_every_steps=4",
            "train.max_steps_per_epoch=10",
            "train.max_failures=2",
            f"train.storage_path={storage}",
            "train.run_name=ft-run",
            "eval.protocols=[full]",
            "eval.every_epochs=0",
            "eval.max_users=100",
            "tracking.experiment=it-fault",
            "tracking.register=false",
        ],
    )
    job.data = data_cfg
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = run_train_job(job)
        except BaseException as exc:  # noqa: BLE001 (reported to the test thread)
            outcome["error"] = exc

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    deadline = time.time() + 240
    killed = None
    while time.time() < deadline and thread.is_alive():
        ckpts = list((storage / "ft-run").glob("checkpoint_*")) if (storage / "ft-run").exists() else []
        pids = _worker_pids()
        # Wait for a few checkpoints: the controller registers a checkpoint shortly after its
        # folder appears, and only a registered one is handed to the restarted workers.
        if len(ckpts) >= 2 and len(pids) == 2:
            time.sleep(2.0)
            killed = _worker_pids()[-1]
            os.kill(killed, signal.SIGKILL)  # a real process death, mid-run
            break
        time.sleep(0.5)
    assert killed is not None, "training finished or stalled before a checkpoint appeared"
    thread.join(timeout=400)
    assert not thread.is_alive(), "training did not finish after the worker was killed"
    assert "error" not in outcome, repr(outcome.get("error"))
    result = outcome["result"]
    assert result.metrics["restarts"] >= 1, "the run did not restart from a checkpoint"
    state = read_state(result.checkpoint_path)
    assert state is not None and state.epochs_completed == [0, 1, 2]  # none lost, none repeated
    steps_per_epoch = state.history[0]["global_step"]
    assert steps_per_epoch == 10 and state.global_step == 3 * steps_per_epoch == result.metrics["global_step"]
    assert [h["global_step"] for h in state.history] == [steps_per_epoch * (e + 1) for e in range(3)]

    assert all(math.isfinite(h["train_loss"]) and h["train_loss"] > 0 for h in state.history), state.history
    for key in ("test/full/ndcg@10", "test/full/hr@10"):
        assert 0.0 <= result.metrics[key] <= 1.0, (key, result.metrics)
