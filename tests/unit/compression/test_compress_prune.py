"""Pruning: sparsity 0 is the identity, magnitude pruning removes the smallest weights, structured
pruning equals a masked reference and really shrinks the matrices; pruned models save and load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compress_helpers import NUM_ITEMS, batch

from lmrec.compression.artifacts import load_variant, save_variant
from lmrec.compression.prune import (
    magnitude_prune,
    masked_reference,
    plan_structured,
    prunable_weights,
    prune,
    prune_structured,
    sparsity,
)
from lmrec.models.artifacts import load_model_dir
from lmrec.training.steps import default_loss


def test_sparsity_zero_is_the_uncompressed_model(make_model) -> None:
    model = make_model()
    pruned, masks = magnitude_prune(model, 0.0)
    assert all(m.all() for m in masks.values())
    for (n, p), (_, q) in zip(model.state_dict().items(), pruned.state_dict().items()):
        assert torch.equal(p, q), n
    x, y = batch()
    with torch.no_grad():
        assert torch.equal(model(x), pruned(x))
        assert torch.equal(default_loss(model, x, y), default_loss(pruned, x, y))
    assert sparsity(pruned) == 0.0


def test_magnitude_pruning_removes_the_smallest_weights(make_model) -> None:
    model = make_model()
    pruned, masks = magnitude_prune(model, 0.5)
    assert sparsity(pruned) == pytest.approx(0.5, abs=1e-3)
    before = prunable_weights(model)
    for name, w in prunable_weights(pruned).items():
        mask = masks[name]
        assert (w[~mask] == 0).all()
        assert torch.equal(w[mask], before[name][mask])  # kept weights untouched
        assert before[name][~mask].abs().max() <= before[name][mask].abs().min()
    assert torch.equal(pruned.item_embeddings, model.item_embeddings)  # tied scoring table never pruned


@pytest.mark.parametrize(
    "shape",
    [dict(num_heads=4), dict(num_heads=4, num_kv_heads=2), dict(num_heads=4, num_kv_heads=1)],
    ids=["mha", "gqa", "mqa"],
)
@pytest.mark.parametrize("importance", ["magnitude", "activation"])
def test_structured_pruning_equals_masked_reference(make_model, shape: dict, importance: str) -> None:
    model = make_model(**shape)
    calib, _ = batch(b=8, length=16, seed=4)
    pruned, plan = prune_structured(model, 0.5, importance=importance, calib_inputs=calib)
    ref = masked_reference(model, plan)
    x, y = batch(b=5, length=14, seed=1)
    with torch.no_grad():
        got, want = pruned(x), ref(x)
        assert torch.allclose(got[:, 1:], want[:, 1:], atol=1e-5, rtol=1e-5)
        assert torch.allclose(default_loss(pruned, x, y), default_loss(ref, x, y), atol=1e-5)
        # and it is a real change: the unpruned model scores differently
        assert not torch.allclose(model(x)[:, 1:], want[:, 1:], atol=1e-3)


def test_structured_pruning_at_half_shrinks_matrices_and_parameters(make_model) -> None:
    model = make_model(num_heads=4)
    cfg = model.config
    pruned, plan = prune_structured(model, 0.5)
    pc = pruned.config
    assert (pc.num_heads, pc.attn_head_dim, pc.intermediate_size, pc.hidden_size) == (
        2,
        cfg.attn_head_dim,
        cfg.ffn_size // 2,
        cfg.hidden_size,
    )
    for block in pruned.blocks:
        att, mlp = block.self_attn, block.mlp
        assert att.q_proj.weight.shape == (2 * cfg.attn_head_dim, cfg.hidden_size)
        assert att.k_proj.weight.shape == att.v_proj.weight.shape == (2 * cfg.attn_head_dim, cfg.hidden_size)
        assert att.o_proj.weight.shape == (cfg.hidden_size, 2 * cfg.attn_head_dim)
        assert mlp.gate_proj.weight.shape == mlp.up_proj.weight.shape == (cfg.ffn_size // 2, cfg.hidden_size)
        assert mlp.down_proj.weight.shape == (cfg.hidden_size, cfg.ffn_size // 2)
    assert pruned.num_parameters() == pc.num_parameters()  # the analytic count knows head_dim
    backbone = lambda m: m.num_parameters() - m.item_embeddings.numel()  # noqa: E731 (a one-line local helper)
    assert backbone(pruned) == pytest.approx(0.5 * backbone(model), rel=0.01)  # norms are not pruned
    assert all(len(h) == 2 for h in plan.q_heads) and all(len(c) == cfg.ffn_size // 2 for c in plan.channels)


def test_structured_amount_zero_keeps_everything(make_model) -> None:
    model = make_model()
    pruned, _ = prune_structured(model, 0.0)
    x, _ = batch()
    with torch.no_grad():
        assert torch.allclose(pruned(x)[:, 1:], model(x)[:, 1:], atol=1e-6)
    assert pruned.num_parameters() == model.num_parameters()


def test_pruned_model_saves_and_loads_with_the_standard_loader(make_model, tmp_path: Path) -> None:
    model = make_model(num_heads=4)
    pruned, _ = prune_structured(model, 0.5)
    out = save_variant(tmp_path / "pruned", pruned, list(range(NUM_ITEMS)), compression={"prune": "structured"})
    plain, _, _ = load_model_dir(out)  # config.json carries num_heads/head_dim/intermediate_size
    variant, _, meta = load_variant(out)
    x, _ = batch()
    with torch.no_grad():
        assert torch.equal(plain(x), pruned(x)) and torch.equal(variant(x), pruned(x))
    assert plain.config.head_dim == model.config.attn_head_dim and meta["compression"]["prune"] == "structured"


def test_plan_keeps_the_most_important_heads(make_model) -> None:
    model = make_model(num_heads=4)
    hd = model.config.attn_head_dim
    with torch.no_grad():  # make head 2 of layer 0 tiny: it must be the first to go
        att = model.blocks[0].self_attn
        for proj in (att.q_proj, att.k_proj, att.v_proj):
            proj.weight[2 * hd : 3 * hd] *= 1e-3
        att.o_proj.weight[:, 2 * hd : 3 * hd] *= 1e-3
    plan = plan_structured(model, 0.25)
    assert plan.q_heads[0] == [0, 1, 3]


def test_prune_dispatch_and_bad_amounts(make_model) -> None:
    model = make_model()
    m, info = prune(model, "magnitude", 0.3)
    assert info["kind"] == "magnitude" and info["sparsity"] == pytest.approx(0.3, abs=1e-3) and "masks" in info
    m, info = prune(model, "structured", 0.5)
    assert info["heads_per_layer"] == 1 and info["ffn_per_layer"] == model.config.ffn_size // 2
    with pytest.raises(ValueError):
        magnitude_prune(model, 1.0)
    with pytest.raises(ValueError):
        prune(model, "random", 0.5)
    with pytest.raises(ValueError, match="calib_inputs"):
        plan_structured(model, 0.5, importance="activation")
