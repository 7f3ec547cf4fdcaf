"""The training loop in-process (LocalContext): it learns, and resuming after a crash
mid-epoch reproduces the uninterrupted run exactly (no lost or repeated steps)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmrec.config import load_config
from lmrec.data.config import DataConfig, SyntheticConfig
from lmrec.data.prepare import prepare_local
from lmrec.data.sequences import SequenceData
from lmrec.data.synthetic import generate
from lmrec.evaluation.protocols import evaluate_scorer, popularity_scorer
from lmrec.models.artifacts import load_model_dir
from lmrec.training.checkpoint import read_state
from lmrec.training.config import TrainJobConfig
from lmrec.training.context import LocalContext
from lmrec.training.loop import run_training
from lmrec.training.steps import EXPORT_DIR, default_loss


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    syn = SyntheticConfig(num_users=400, num_items=150, num_clusters=10, mean_seq_len=15, zipf_alpha=0.5, seed=1)
    cfg = DataConfig(dataset="synthetic", synthetic=syn)
    return prepare_local(cfg, generate(syn), tmp_path_factory.mktemp("prep") / "p").path


def _cfg(prepared: Path, *extra: str) -> TrainJobConfig:
    cfg = load_config(
        TrainJobConfig,
        None,
        [
            "train.strategy=none",
            "train.batch_size=32",
            "train.lr=0.003",
            "model.dropout=0.1",
            "eval.protocols=[full]",
            "eval.every_epochs=0",
            "train.log_every_steps=1000",
            *extra,
        ],
    )
    cfg.prepared_path = str(prepared)
    return cfg


def test_training_beats_popularity(prepared: Path, tmp_path: Path) -> None:
    out = run_training(_cfg(prepared, "train.epochs=6"), LocalContext(tmp_path))
    data = SequenceData.load(prepared)
    pop = evaluate_scorer(popularity_scorer(data), data, "test", protocols=["full"])
    assert out["test/full/ndcg@10"] > 2 * pop["full/ndcg@10"], (out["test/full/ndcg@10"], pop["full/ndcg@10"])
    assert out["epochs_completed"] == 6


class Crash(RuntimeError):
    pass


def _crash_on_step(n: int):  # type: ignore[no-untyped-def]
    """The default loss, raising Crash (a simulated worker death) on its n-th call."""
    calls = {"n": 0}

    def loss(model, x, y):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == n:
            raise Crash("simulated worker death")
        return default_loss(model, x, y)

    return loss


@pytest.fixture()
def deterministic():
    """Bitwise-repeatable CPU kernels: one thread, deterministic algorithms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


def test_resume_after_crash_matches_uninterrupted_run(prepared: Path, tmp_path: Path, deterministic: None) -> None:
    extra = ("train.epochs=2", "train.checkpoint_every_steps=3", "model.loss=sampled", "model.num_negatives=16")
    ref_ctx = LocalContext(tmp_path / "ref")
    ref = run_training(_cfg(prepared, *extra), ref_ctx)

    crashing_loss = _crash_on_step(8)  # dies on the 8th step: mid-epoch, after a checkpoint at step 6

    ctx = LocalContext(tmp_path / "run")
    with pytest.raises(Crash):
        run_training(_cfg(prepared, *extra), ctx, loss_fn=crashing_loss)
    last = read_state(ctx.checkpoints[-1])
    assert last is not None and last.global_step == 6 and last.epoch == 0 and last.step_in_epoch == 6

    resumed = run_training(_cfg(prepared, *extra), LocalContext(tmp_path / "run"))
    assert resumed["restarts"] == 1
    assert resumed["global_step"] == ref["global_step"]
    final_state = read_state(sorted((tmp_path / "run").glob("checkpoint_*"))[-1])
    assert final_state.epochs_completed == [0, 1]  # each epoch exactly once
    assert [h["epoch"] for h in final_state.history] == [0, 1]
    # The interrupted epoch's mean loss covers all its steps, those before the crash too.
    ref_state = read_state(sorted((tmp_path / "ref").glob("checkpoint_*"))[-1])
    assert [h["train_loss"] for h in final_state.history] == pytest.approx([h["train_loss"] for h in ref_state.history])
    # Same data order, RNG and optimizer state: identical weights and metrics.
    a, _, _ = load_model_dir(sorted((tmp_path / "ref").glob("checkpoint_*"))[-1] / EXPORT_DIR)
    b, _, _ = load_model_dir(sorted((tmp_path / "run").glob("checkpoint_*"))[-1] / EXPORT_DIR)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(p, q, rtol=0, atol=1e-6), (n, (p - q).abs().max().item())
    assert resumed["test/full/ndcg@10"] == pytest.approx(ref["test/full/ndcg@10"])


def test_early_stopping_and_best_epoch_selection(prepared: Path, tmp_path: Path) -> None:
    # A vanishing learning rate cannot improve validation: training stops after `patience`
    # validations without gain, and the exported weights are those of the best epoch.
    cfg = _cfg(
        prepared,
        "train.epochs=6",
        "train.lr=1e-12",
        "eval.every_epochs=1",
        "train.early_stopping_patience=2",
        "eval.max_users=100",
    )
    out = run_training(cfg, LocalContext(tmp_path))
    state = read_state(sorted(tmp_path.glob("checkpoint_*"))[-1])
    assert state.stopped_early and state.epochs_completed == [0, 1, 2]
    assert out["best_epoch"] == 0 and state.best_epoch == 0


def test_resume_when_the_checkpoint_holds_no_best_weights(prepared: Path, tmp_path: Path) -> None:
    # select_best off: validation still records the best epoch, but no best weights are
    # saved, so resuming must not ask the checkpoint for them (DCP fails on a key it does not hold).
    extra = (
        "train.epochs=2",
        "train.checkpoint_every_steps=3",
        "eval.every_epochs=1",
        "eval.max_users=50",
        "train.select_best=false",
    )
    crashing_loss = _crash_on_step(18)  # epoch 1, after its mid-epoch checkpoint at global step 15

    ctx = LocalContext(tmp_path)
    with pytest.raises(Crash):
        run_training(_cfg(prepared, *extra), ctx, loss_fn=crashing_loss)
    last = read_state(ctx.checkpoints[-1])
    assert last is not None and last.epoch == 1 and last.best_epoch == 0 and last.step_in_epoch > 0
    out = run_training(_cfg(prepared, *extra), LocalContext(tmp_path))
    state = read_state(sorted(tmp_path.glob("checkpoint_*"))[-1])
    assert out["restarts"] == 1 and state.epochs_completed == [0, 1]


def test_checkpoint_every_epochs_saves_only_those_epochs_and_resume_redoes_the_rest(
    prepared: Path, tmp_path: Path
) -> None:
    extra = ("train.epochs=4", "train.checkpoint_every_epochs=2", "train.max_steps_per_epoch=4")
    crashing_loss = _crash_on_step(11)  # in epoch 3 (index 2): its checkpoint-less start is lost

    ctx = LocalContext(tmp_path)
    with pytest.raises(Crash):
        run_training(_cfg(prepared, *extra), ctx, loss_fn=crashing_loss)
    # epoch 1 reports metrics without a checkpoint; epoch 2 saves one
    assert [r["epochs_completed"] for r in ctx.reports] == [1, 2]
    assert [c.name for c in ctx.checkpoints] == ["checkpoint_00000008"]
    out = run_training(_cfg(prepared, *extra), LocalContext(tmp_path))
    state = read_state(sorted(tmp_path.glob("checkpoint_*"))[-1])
    assert out["restarts"] == 1 and state.epochs_completed == [0, 1, 2, 3] and state.global_step == 16
    # 0 = no epoch-end checkpoints, only the final one
    ctx0 = LocalContext(tmp_path / "none")
    run_training(
        _cfg(prepared, "train.epochs=2", "train.checkpoint_every_epochs=0", "train.max_steps_per_epoch=3"), ctx0
    )
    assert [c.name for c in ctx0.checkpoints] == ["checkpoint_00000006"] and len(ctx0.reports) == 3
