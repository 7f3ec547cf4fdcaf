"""Fused item representations (ID + projected text + attribute bag): the model, its features,
training with them in-process, the exported artifact, and the serving-time frozen table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lmrec.config import ConfigError, load_config
from lmrec.data.config import DataConfig, SyntheticConfig
from lmrec.data.item_features import EMBEDDINGS, ItemFeatureError, load_item_features
from lmrec.data.prepare import prepare_local
from lmrec.data.synthetic import generate
from lmrec.models import SeqRecModel, build_config, init_weights_
from lmrec.models.artifacts import load_model_dir
from lmrec.models.seqrec import content_rows, freeze_items
from lmrec.models.sizes import ModelSpec
from lmrec.training.config import TrainJobConfig
from lmrec.training.context import LocalContext
from lmrec.training.loop import run_training
from lmrec.training.steps import EXPORT_DIR

V = 30  # items


def _fused(mode: str, **kw: object) -> SeqRecModel:
    cfg = build_config("tiny", V, fusion=mode, text_dim=16, num_attributes=7, max_attributes=3, dropout=0.0, **kw)
    m = SeqRecModel(cfg)
    init_weights_(m, 1)
    g = torch.Generator().manual_seed(0)
    text = torch.randn(V + 1, 16, generator=g)
    has = torch.ones(V + 1)
    has[[0, 4]] = 0  # item 4 has no text: attributes (and ID) only
    attrs = torch.randint(0, 8, (V + 1, 3), generator=g)
    attrs[0] = 0
    mask = torch.ones(V + 1)
    mask[[0, 5]] = 0  # item 5 is cold: no trained ID
    m.fusion.set_content(text, has, attrs, mask)
    return m


@pytest.mark.parametrize("mode", ["add", "gate", "concat_proj"])
def test_fused_table_is_input_and_output_and_cold_items_are_content_only(mode: str) -> None:
    m = _fused(mode)
    assert m.num_parameters() == m.config.num_parameters()
    x = torch.randint(1, V + 1, (4, 9), generator=torch.Generator().manual_seed(1))
    m(x, targets=torch.roll(x, -1, 1)).backward()
    fusion = m.fusion
    trained = [fusion.attr_embed.weight] + [
        getattr(fusion, n).weight for n in ("text_proj", "gate", "proj") if hasattr(fusion, n)
    ]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    assert m.backbone.embed_tokens.weight.grad[5].abs().sum() == 0  # the cold item's ID row is never used
    assert not fusion.text.requires_grad  # a frozen buffer unless finetune_text
    m.eval()
    table = m.item_embeddings
    assert torch.all(table[0] == 0)
    scores = m(x)
    assert torch.isfinite(scores[:, 1:]).all() and torch.allclose(scores[:, 5], (m.encode(x, table)[:, -1] @ table[5]))
    # the cold item's row is its content alone: what content_rows gives an item the model never saw
    row = content_rows(m, fusion.text[5:6], fusion.has_text[5:6], fusion.attrs[5:6])
    assert torch.allclose(row[0], table[5], atol=1e-6)
    # serving's frozen table scores exactly as the fused model, and a new item appended is rankable
    frozen = freeze_items(m)
    assert frozen.fusion is None and torch.allclose(frozen(x), scores, atol=1e-5)
    grown = freeze_items(m, row)
    assert grown.config.num_items == V + 1
    new_scores = grown(torch.cat([x, torch.full((4, 1), V + 1)], 1))
    assert new_scores.shape == (4, V + 2) and torch.isfinite(new_scores[:, V + 1]).all()


def test_id_dropout_only_in_training() -> None:
    m = _fused("add", id_dropout=0.5)
    torch.manual_seed(0)
    t1, t2 = m.item_embeddings, m.item_embeddings
    assert not torch.allclose(t1, t2)  # another ID mask per step
    m.eval()
    assert torch.allclose(m.item_embeddings, m.item_embeddings)


def test_content_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="fusion"):
        build_config("tiny", 10, fusion="add")  # no content
    with pytest.raises(ConfigError, match="fusion"):
        build_config("tiny", 10, text_dim=8)  # content without a fusion
    with pytest.raises(ConfigError, match="id_dropout"):
        build_config("tiny", 10, fusion="add", num_attributes=3, max_attributes=2, id_dropout=1.0)
    with pytest.raises(ValueError, match="content.fusion"):
        ModelSpec.model_validate({"content": {"attributes": True}})
    with pytest.raises(ValueError, match="content.text"):
        ModelSpec.model_validate({"content": {"fusion": "add", "text": "bert"}})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    syn = SyntheticConfig(num_users=300, num_items=120, num_clusters=8, mean_seq_len=12, zipf_alpha=0.5, seed=3)
    cfg = DataConfig(dataset="synthetic", synthetic=syn)
    return prepare_local(cfg, generate(syn), tmp_path_factory.mktemp("prep") / "p").path


def _embeddings(prepared: Path, folder: Path, bad: bool = False) -> Path:
    items = pq.read_table(prepared / "items.parquet")
    ids = items.column("item_id").to_numpy()
    vec = np.random.default_rng(0).normal(size=(len(ids), 12)).astype(np.float32)
    if bad:
        vec[3, 1] = np.nan
    folder.mkdir(parents=True, exist_ok=True)
    flat = pa.array(vec.reshape(-1), pa.float32())
    table = pa.table({"item_id": pa.array(ids, pa.int64()), "embedding": pa.FixedSizeListArray.from_arrays(flat, 12)})
    pq.write_table(table, folder / EMBEDDINGS)
    return folder


def test_item_features_align_to_item_idx_and_refuse_nan(prepared: Path, tmp_path: Path) -> None:
    f = load_item_features(prepared, _embeddings(prepared, tmp_path / "e"), attributes=True, max_attributes=2)
    n = int(pq.read_metadata(prepared / "items.parquet").num_rows)
    assert f.text.shape == (n + 1, 12) and f.has_text[0] == 0 and f.has_text[1:].all()
    assert np.allclose(np.linalg.norm(f.text[1:], axis=1), 1.0, atol=1e-5)
    assert f.attrs.shape == (n + 1, 2) and (f.attrs[1:, 0] > 0).all() and f.attribute_vocab[0].startswith("cluster:")
    with pytest.raises(ItemFeatureError, match="NaN or infinite"):
        load_item_features(prepared, _embeddings(prepared, tmp_path / "bad", bad=True))


def test_training_with_fused_attributes_exports_a_model_that_scores_the_same(prepared: Path, tmp_path: Path) -> None:
    cfg = load_config(
        TrainJobConfig,
        None,
        [
            "train.strategy=none",
            "train.epochs=2",
            "train.batch_size=32",
            "eval.protocols=[full]",
            "train.log_every_steps=1000",
            "model.content.fusion=gate",
            "model.content.attributes=true",
            "model.content.id_dropout=0.3",
        ],
    )
    cfg.prepared_path = str(prepared)
    out = run_training(cfg, LocalContext(tmp_path))
    assert out["test/full/ndcg@10"] > 0
    export = next(tmp_path.rglob(EXPORT_DIR))
    model, vocab, meta = load_model_dir(export)
    assert model.config.fusion == "gate" and model.config.num_attributes == 8
    content = meta["item_content"]
    assert content["attribute_vocab"] == [f"cluster:{k}" for k in sorted(range(8), key=str)]
    x = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(freeze_items(model)(x), model(x), atol=1e-5)
