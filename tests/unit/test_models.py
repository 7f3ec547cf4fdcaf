"""SeqRecModel: parameter counts, losses, padding, tied scores, safe artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lmrec.config import ConfigError
from lmrec.models import PAD_ID, SeqRecModel, build_config, init_weights_, size_table
from lmrec.models.artifacts import UnsafeArtifactError, load_model_dir, save_model_dir


def _model(**kw) -> SeqRecModel:
    torch.manual_seed(0)
    m = SeqRecModel(build_config("tiny", 50, dropout=0.0, **kw))
    init_weights_(m, 0)
    return m.eval()


def test_analytic_parameter_count_matches_built_model() -> None:
    for size in ("tiny", "small"):
        cfg = build_config(size, 123)
        assert SeqRecModel(cfg).num_parameters() == cfg.num_parameters()
    cfg = build_config("tiny", 123, num_kv_heads=1, num_heads=2)
    assert SeqRecModel(cfg).num_parameters() == cfg.num_parameters()


def test_named_sizes_meet_their_parameter_floors() -> None:
    rows = {r["size"]: r for r in size_table(10_000)}
    assert rows["large"]["backbone_params"] >= 300_000_000
    assert rows["xl"]["backbone_params"] >= 1_000_000_000
    sizes = [rows[s]["total_params"] for s in ("tiny", "small", "base", "large", "xl")]
    assert sizes == sorted(sizes)


def test_invalid_model_config_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        build_config("tiny", 10, num_heads=3)
    assert info.value.key == "num_heads"


def test_scores_are_tied_to_item_embeddings_and_mask_padding() -> None:
    m = _model()
    x = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    scores = m(x)
    assert scores.shape == (2, 51)
    assert torch.isinf(scores[:, PAD_ID]).all()
    hidden = m.encode(x)[:, -1]
    expected = hidden @ m.item_embeddings.T
    assert torch.allclose(scores[:, 1:], expected[:, 1:], atol=1e-5)
    cand = torch.tensor([[3, 7], [1, 2]])
    assert torch.allclose(m(x, candidates=cand), expected.gather(1, cand), atol=1e-5)


def test_left_padding_does_not_change_the_last_position() -> None:
    m = _model()
    short = torch.tensor([[7, 8, 9]])
    padded = torch.tensor([[0, 0, 0, 0, 7, 8, 9]])
    assert torch.allclose(m(short), m(padded), atol=1e-4)


@pytest.mark.parametrize("kw", [{}, dict(num_kv_heads=1), dict(num_layers=1)])
def test_last_position_block_scores_like_the_full_block(kw: dict) -> None:
    """Serving's last-position block (grouped-query attention and a one-block model too) gives the
    full forward's scores, with and without left padding, and can be undone."""
    import copy

    from lmrec.models.seqrec import LastPositionLayer, score_full_sequence, score_last_position_only

    m = _model(**kw)
    fast = score_last_position_only(copy.deepcopy(m))
    assert isinstance(fast.backbone.layers[-1], LastPositionLayer)
    assert score_last_position_only(fast) is fast and isinstance(fast.backbone.layers[-1].block, nn.Module)
    assert not isinstance(fast.backbone.layers[-1].block, LastPositionLayer)  # not wrapped twice
    x = torch.randint(1, 51, (6, 12), generator=torch.Generator().manual_seed(0))
    x[0, :7] = PAD_ID
    x[3, :11] = PAD_ID  # one real item
    with torch.inference_mode():
        full, last = m(x), fast(x)
        assert torch.isinf(last[:, PAD_ID]).all()
        torch.testing.assert_close(last[:, 1:], full[:, 1:], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast(x[:, -1:])[:, 1:], m(x[:, -1:])[:, 1:], rtol=1e-5, atol=1e-5)  # length 1
        assert not isinstance(m.backbone.layers[-1], LastPositionLayer)  # the copy was changed, not m
        score_full_sequence(fast)
        assert not isinstance(fast.backbone.layers[-1], LastPositionLayer)
        torch.testing.assert_close(fast(x), full)


@pytest.mark.parametrize(
    "kw",
    [
        dict(loss="full"),
        dict(loss="sampled", negative_sampling="uniform", num_negatives=20),
        dict(loss="sampled", negative_sampling="in_batch"),
    ],
)
def test_losses_are_finite_and_trainable(kw: dict) -> None:
    m = _model(**kw).train()
    x = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    y = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]])
    loss = m(x, targets=y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert m.item_embeddings.grad is not None and m.item_embeddings.grad.abs().sum() > 0


def test_full_softmax_loss_is_cross_entropy_over_the_catalog() -> None:
    m = _model()
    x = torch.tensor([[1, 2, 3]])
    y = torch.tensor([[2, 3, 4]])
    logits = m.encode(x)[0] @ m.item_embeddings.T
    logits[:, PAD_ID] = float("-inf")
    expected = torch.nn.functional.cross_entropy(logits, y[0])
    assert torch.allclose(m(x, targets=y), expected, atol=1e-5)


def test_artifact_round_trip_is_exact(tmp_path: Path) -> None:
    m = _model()
    vocab = list(range(100, 150))
    save_model_dir(tmp_path / "m", m.config, m.state_dict(), vocab, {"note": "t"})
    m2, vocab2, meta = load_model_dir(tmp_path / "m")
    x = torch.tensor([[1, 2, 3, 4]])
    assert vocab2 == vocab and meta["note"] == "t"
    assert torch.equal(m(x), m2(x))


def test_pickle_artifacts_are_refused(tmp_path: Path) -> None:
    m = _model()
    d = tmp_path / "evil"
    save_model_dir(d, m.config, m.state_dict(), list(range(50)))
    (d / "model.safetensors").unlink()

    class Boom:
        def __reduce__(self):  # runs on unpickling: exactly what must never happen
            return (Path("/tmp/lmrec-pwned").touch, ())

    torch.save({"x": Boom()}, d / "pytorch_model.bin")
    with pytest.raises(UnsafeArtifactError, match="pickle"):
        load_model_dir(d)
    # A pickle payload renamed to look like safetensors is refused too.
    (d / "pytorch_model.bin").rename(d / "model.safetensors")
    with pytest.raises(UnsafeArtifactError):
        load_model_dir(d)
    assert not Path("/tmp/lmrec-pwned").exists()
