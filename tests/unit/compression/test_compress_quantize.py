"""Quantization: int8 projections stay close to fp32, save as safetensors and reload bit-identically;
fp16/bf16 casts run and round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from compress_helpers import NUM_ITEMS, batch
from safetensors import safe_open

from lmrec.compression.artifacts import load_variant, parameter_count, save_variant, weight_bytes
from lmrec.compression.quantize import Int8Linear, cast_weights, linear_module_names, quantize, quantize_int8
from lmrec.models.artifacts import PICKLE_SUFFIXES, artifact_size_bytes, load_model_dir, save_model_dir

ITEM_IDS = list(range(1001, 1001 + NUM_ITEMS))


def test_int8_linear_per_channel_scales_and_error() -> None:
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(48, 32, bias=True)
    with torch.no_grad():
        lin.weight.copy_(
            torch.randn(32, 48, generator=g) * torch.linspace(0.01, 1.0, 32)[:, None]
        )  # rows of very different range
    q = Int8Linear.from_linear(lin)
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.abs().max() <= 127
    assert torch.allclose(q.weight_scale, lin.weight.abs().amax(1) / 127)
    # each weight is within half a step of its own row's grid
    assert ((q.dequantized_weight() - lin.weight).abs() <= q.weight_scale[:, None] / 2 + 1e-7).all()
    x = torch.randn(5, 7, 48, generator=g)
    with torch.no_grad():
        ref, got = lin(x), q(x)
    assert got.shape == ref.shape
    assert (got - ref).norm() / ref.norm() < 0.02


def test_int8_kernel_and_float_fallback_agree() -> None:
    lin = torch.nn.Linear(64, 40, bias=False)
    q = Int8Linear.from_linear(lin)
    x = torch.randn(9, 64)
    with torch.no_grad():
        kernel = q(x)
        q._kernel_failed = True  # forces the dequantized float path (GPUs, engines without the op)
        fallback = q(x)
        ref = lin(x)
    assert (kernel - fallback).norm() / ref.norm() < 0.02  # they differ only by activation rounding
    assert torch.allclose(fallback, x @ q.dequantized_weight().T, atol=1e-5)


def test_int8_model_ranks_like_fp32(make_model) -> None:
    model = make_model()
    qmodel = quantize_int8(model)
    names = linear_module_names(model)
    assert len(names) == 7 * model.config.num_layers
    assert all(isinstance(qmodel.get_submodule(n), Int8Linear) for n in names)
    assert isinstance(model.get_submodule(names[0]), torch.nn.Linear)  # the original is untouched
    x, _ = batch(b=8, length=20)
    with torch.no_grad():
        ref, got = model(x)[:, 1:], qmodel(x)[:, 1:]
    assert (got - ref).norm() / ref.norm() < 0.03
    top_ref, top_got = ref.topk(10).indices, got.topk(10).indices
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top_ref, top_got)) / top_ref.numel()
    assert overlap >= 0.8
    assert parameter_count(qmodel) == parameter_count(model)
    assert weight_bytes(qmodel) < 0.6 * weight_bytes(model)


def test_int8_artifact_is_safetensors_and_reloads_identically(make_model, tmp_path: Path) -> None:
    model = make_model(num_heads=4)
    qmodel = quantize_int8(model)
    save_variant(tmp_path / "fp32", model, ITEM_IDS)
    out = save_variant(tmp_path / "int8", qmodel, ITEM_IDS, metadata={"dataset": "test"}, compression={"name": "q"})
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.json", "metadata.json", "model.safetensors", "vocab.json"]
    assert not any(p.suffix in PICKLE_SUFFIXES for p in out.iterdir())
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        w = fh.get_tensor("backbone.layers.0.self_attn.q_proj.weight_int8")
        assert w.dtype == torch.int8
        assert "backbone.layers.0.self_attn.q_proj.weight" not in fh.keys()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["compression"]["quantization"] == "int8" and meta["compression"]["name"] == "q"
    assert artifact_size_bytes(out) < 0.6 * artifact_size_bytes(tmp_path / "fp32")

    loaded, vocab, meta2 = load_variant(out)
    assert vocab == ITEM_IDS and meta2["dataset"] == "test"
    x, _ = batch(b=6, length=15, seed=2)
    with torch.no_grad():
        assert torch.equal(loaded(x), qmodel(x))  # bit-identical, same kernels on the same int8 weights
        assert torch.equal(loaded(x[:1]), qmodel(x[:1]))
    with pytest.raises(ValueError, match="do not match"):  # the plain loader refuses it rather than mis-loading
        load_model_dir(out)


@pytest.mark.parametrize("mode,dtype,tol", [("fp16", torch.float16, 0.01), ("bf16", torch.bfloat16, 0.05)])
def test_half_precision_casts_run_and_round_trip(
    make_model, tmp_path: Path, mode: str, dtype: torch.dtype, tol: float
) -> None:
    model = make_model()
    half = quantize(model, mode)
    assert {p.dtype for p in half.parameters()} == {dtype}
    inv = [b for n, b in half.named_buffers() if n.endswith("inv_freq")]
    assert inv and all(b.dtype == torch.float32 for b in inv)  # rotary frequencies stay exact
    x, _ = batch(b=3, length=10)
    with torch.no_grad():
        ref, got = model(x)[:, 1:], half(x)[:, 1:].float()
    assert torch.isfinite(got).all()
    assert (got - ref).norm() / ref.norm() < tol
    out = save_variant(tmp_path / mode, half, ITEM_IDS)
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        assert fh.get_tensor("backbone.embed_tokens.weight").dtype == dtype
    loaded, _, _ = load_variant(out)
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    with torch.no_grad():
        assert torch.equal(loaded(x), half(x))
    assert artifact_size_bytes(out) < 0.6 * artifact_size_bytes(save_variant(tmp_path / "fp32", model, ITEM_IDS))


def test_load_variant_on_a_plain_artifact_equals_load_model_dir(make_model, tmp_path: Path) -> None:
    model = make_model()
    save_model_dir(tmp_path / "plain", model.config, model.state_dict(), ITEM_IDS)
    a, va, _ = load_variant(tmp_path / "plain")
    b, vb, _ = load_model_dir(tmp_path / "plain")
    x, _ = batch()
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and va == vb


def test_unknown_mode_and_dtype_are_refused(make_model) -> None:
    with pytest.raises(ValueError, match="unknown quantization mode"):
        quantize(make_model(), "int4")
    with pytest.raises(ValueError, match="unsupported dtype"):
        cast_weights(make_model(), torch.int8)


def test_safetensors_whose_header_length_looks_like_pickle_magic_still_loads(tmp_path: Path) -> None:
    """A header of 896 bytes starts the file with b"\\x80\\x03", the pickle protocol-3 magic."""
    import pickle

    from safetensors.torch import save_file

    from lmrec.models.artifacts import WEIGHTS, UnsafeArtifactError, check_safe

    path = tmp_path / WEIGHTS
    for pad in range(2000):
        save_file({"a": torch.zeros(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[:2] == b"\x80\x03":
            break
    assert path.read_bytes()[:2] == b"\x80\x03"
    check_safe(tmp_path)  # accepted: a valid header follows
    path.write_bytes(pickle.dumps({"a": 1}, protocol=3))
    with pytest.raises(UnsafeArtifactError, match="pickle"):
        check_safe(tmp_path)
