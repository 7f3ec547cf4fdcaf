"""Distillation loss: reduces exactly to plain training, has the right KL, works sharded."""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from compress_helpers import NUM_ITEMS, batch

from lmrec.compression.distill import TeacherTopK, check_teacher_catalog, distillation_loss, soft_kl
from lmrec.data.sequences import trim_padding
from lmrec.training.steps import default_loss


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _loss_and_grads(model, loss_fn, x, y, seed: int = 5):
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # dropout and sampled negatives draw from the global generator
    loss = loss_fn(model, x, y)
    loss.backward()
    return loss.detach(), _grads(model)


@pytest.mark.parametrize("loss_kind", ["full", "sampled"])
def test_alpha_zero_reproduces_default_loss_exactly(make_model, loss_kind: str) -> None:
    student = make_model(seed=1, dropout=0.2, loss=loss_kind, num_negatives=16)  # dropout on: RNG use must match too
    teacher = make_model(seed=2)
    x, y = batch()
    ref_loss, ref_grads = _loss_and_grads(student, default_loss, x, y)
    for temperature in (0.5, 1.0, 4.0):
        loss, grads = _loss_and_grads(student, distillation_loss(teacher, temperature, alpha=0.0), x, y)
        assert torch.equal(loss, ref_loss)
        assert grads.keys() == ref_grads.keys()
        for n in ref_grads:
            assert torch.equal(grads[n], ref_grads[n]), n


def test_teacher_equal_to_student_leaves_only_the_hard_term(make_model) -> None:
    """KL(p || p) = 0 and its gradient vanishes, so loss and grads are (1 - alpha) x plain."""
    student = make_model(seed=1)
    teacher = copy.deepcopy(student)
    x, y = batch()
    ref_loss, ref_grads = _loss_and_grads(student, default_loss, x, y)
    alpha = 0.3
    loss, grads = _loss_and_grads(student, distillation_loss(teacher, temperature=3.0, alpha=alpha), x, y)
    assert loss.item() == pytest.approx((1 - alpha) * ref_loss.item(), rel=1e-6, abs=1e-7)
    for n in ref_grads:
        assert torch.allclose(grads[n], (1 - alpha) * ref_grads[n], atol=1e-6, rtol=1e-4), n
    assert not any(p.requires_grad for p in teacher.parameters())  # frozen


def test_soft_kl_matches_the_definition() -> None:
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(5, 9, generator=g) * 3, torch.randn(5, 9, generator=g) * 3
    for temp in (1.0, 2.5):
        p = torch.softmax(t.double() / temp, -1)
        q = torch.softmax(s.double() / temp, -1)
        manual = (p * (p.log() - q.log())).sum(-1).mean()
        assert soft_kl(t, s, temp).item() == pytest.approx(manual.item(), rel=1e-5)
    assert soft_kl(t, t, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_pure_distillation_pulls_student_towards_teacher(make_model) -> None:
    student, teacher = make_model(seed=1), make_model(seed=2)
    x, y = batch()
    loss_fn = distillation_loss(teacher, temperature=2.0, alpha=1.0)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(student, x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_topk_over_the_whole_catalog_equals_full_kl(make_model) -> None:
    student, teacher = make_model(seed=1), make_model(seed=2)
    x, y = batch()
    full = distillation_loss(teacher, temperature=2.0, alpha=0.7)(student, x, y)
    topall = distillation_loss(teacher, temperature=2.0, alpha=0.7, topk=NUM_ITEMS)(student, x, y)
    top5 = distillation_loss(teacher, temperature=2.0, alpha=0.7, topk=5)(student, x, y)
    assert topall.item() == pytest.approx(full.item(), rel=1e-5)
    assert top5.item() != pytest.approx(full.item(), rel=1e-3)  # restricting the support changes the KL


def test_precomputed_topk_table_matches_online_topk(make_model, tmp_path: Path) -> None:
    student, teacher = make_model(seed=1), make_model(seed=2)
    x, y = batch(b=6, length=12, seed=3)
    table = TeacherTopK.build(teacher, x.numpy(), k=8, batch_size=4, dtype=torch.float32)
    assert table.values.shape == (6, 12, 8) and table.nbytes() == 6 * 12 * 8 * (4 + 4)
    table = TeacherTopK.load(table.save(tmp_path / "topk.safetensors"))  # safetensors round trip
    online = distillation_loss(teacher, temperature=2.0, alpha=0.6, topk=8)
    pre = distillation_loss(temperature=2.0, alpha=0.6, table=table)
    # the loop trims all-pad leading columns and reorders rows: lookups must follow
    order = np.array([4, 1, 5])
    xb, yb = trim_padding(x.numpy()[order], y.numpy()[order])
    xb, yb = torch.from_numpy(xb), torch.from_numpy(yb)
    assert torch.allclose(pre(student, xb, yb), online(student, xb, yb), atol=1e-6)
    with pytest.raises(KeyError, match="not in the precomputed teacher table"):
        pre(student, torch.full((1, 4), 7), torch.full((1, 4), 7))


def test_catalog_mismatch_is_refused(make_model) -> None:
    from lmrec.models import SeqRecModel, build_config

    teacher = SeqRecModel(build_config("tiny", NUM_ITEMS + 5, dropout=0.0))
    x, y = batch()
    with pytest.raises(ValueError, match="catalog"):
        distillation_loss(teacher, alpha=0.5)(make_model(), x, y)
    with pytest.raises(ValueError, match="teacher catalog has 10 items but the dataset has 12"):
        check_teacher_catalog(10, 12)


def test_bad_arguments_are_refused(make_model) -> None:
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(make_model(), temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(make_model(), alpha=1.5)
    with pytest.raises(ValueError, match="exactly one"):
        distillation_loss(None, alpha=0.5)


# ---------------------------------------------------------------- sharded student (gloo, 2 ranks)


def _fresh(seed: int):
    from lmrec.models import SeqRecModel, build_config, init_weights_

    m = SeqRecModel(build_config("tiny", NUM_ITEMS, dropout=0.0))
    init_weights_(m, seed)
    return m


def _even_batch():
    return batch(b=4, length=10, seed=9, pad=False)  # no padding: equal targets per rank, mean of means == mean


def _reference_grads(topk: int) -> dict[str, torch.Tensor]:
    student, teacher = _fresh(1), _fresh(2).eval()
    x, y = _even_batch()
    distillation_loss(teacher, 2.0, 0.5, topk=topk)(student, x, y).backward()
    return _grads(student)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from lmrec.training.sharding import wrap_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        results = {}
        x, y = _even_batch()
        sl = slice(rank * 2, rank * 2 + 2)
        # (student strategy, teacher sharded?, top-k)
        for name, strategy, shard_teacher, topk in [("fsdp", "fsdp", False, 0), ("ddp_fsdp_teacher", "ddp", True, 6)]:
            student = wrap_model(_fresh(1), strategy, torch.device("cpu"), torch.float32)
            teacher = _fresh(2).eval()
            if shard_teacher:
                teacher = wrap_model(teacher, "fsdp", torch.device("cpu"), torch.float32)
            distillation_loss(teacher, 2.0, 0.5, topk=topk)(student, x[sl], y[sl]).backward()
            grads = {}
            for n, p in student.named_parameters():
                g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
                grads[n.removeprefix("module.")] = g.detach().clone()
            results[name] = grads
        if rank == 0:
            torch.save(results, Path(out_dir) / "grads.pt")
        dist.barrier()  # both ranks past every collective before gloo is torn down (see test_sharding)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sharded_student_gets_single_process_gradients(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / "grads.pt", weights_only=True)  # our own test output: tensors only
    for name, topk in [("fsdp", 0), ("ddp_fsdp_teacher", 6)]:
        ref = _reference_grads(topk)
        assert set(got[name]) == set(ref), name
        for n, g in ref.items():
            assert torch.allclose(got[name][n], g, atol=1e-6, rtol=1e-4), (name, n)
