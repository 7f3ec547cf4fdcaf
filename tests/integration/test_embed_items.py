"""Item text embedded by the Ray Data actor pool on the shared cluster: wordllama, and a tiny
random Hugging Face encoder loaded by path from two actors. The vectors equal those the encoder
gives in-process, row for row; a second run is served from the cache; the MLflow run holds the
lineage, the artifacts and the item table as a dataset input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmrec.config import load_config
from lmrec.content.config import EmbedJobConfig
from lmrec.content.embed import load_embeddings, text_table
from lmrec.content.job import run_embed_job
from lmrec.models.encoders import EncoderOptions, load_encoder

pytestmark = pytest.mark.integration
GENRES = ["comedy", "horror", "animation", "drama", "sci-fi"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Text for the synthetic items: every seventh has none (it keeps attributes and ID)."""
    path = tmp_path_factory.mktemp("catalog") / "items.parquet"
    ids = list(range(0, 200))
    pq.write_table(
        pa.table(
            {
                "item_id": ids,
                "title": [None if i % 7 == 0 else f"story {i} {GENRES[i % 5]} toy" for i in ids],
                "genre": [GENRES[i % 5] for i in ids],
            }
        ),
        path,
    )
    return path


def _job(catalog: Path, *overrides: str) -> EmbedJobConfig:
    return load_config(
        EmbedJobConfig,
        None,
        [
            "data.dataset=synthetic",
            "data.synthetic.num_users=200",
            "data.synthetic.num_items=120",
            "data.synthetic.num_clusters=5",
            f"data.items.source={catalog}",
            "data.items.text_columns=[title]",
            "data.items.attribute_columns=[genre]",
            "tracking.experiment=it-embed",
            *overrides,
        ],
    )


def _same_as_in_process(result, encoder: str) -> None:  # type: ignore[no-untyped-def]
    ids, vectors = load_embeddings(result.path)
    texts, without = text_table(Path(result.meta["source"]))
    assert ids.tolist() == texts.column("item_id").to_pylist() and without == result.meta["items_without_text"] > 0
    expected = load_encoder(encoder, EncoderOptions()).encode(texts.column("text").to_pylist())
    np.testing.assert_allclose(vectors, expected, atol=1e-4)


def test_wordllama_embeds_the_catalog_text_and_logs_its_lineage(ray_cluster, mlflow_server, catalog) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    cfg = _job(catalog)
    first = run_embed_job(cfg)
    assert not first.cached and first.meta["dim"] == 256 and first.meta["items_per_s"] > 0
    _same_as_in_process(first, "wordllama")
    again = run_embed_job(cfg)
    assert again.cached and again.path == first.path and again.run_id != first.run_id

    c = MlflowClient(mlflow_server.uri)
    run = c.get_run(first.run_id)
    assert run.data.params["embed.encoder"] == "wordllama" and run.data.params["embed.dim"] == "256"
    assert run.data.params["data.dataset"] == "synthetic" and run.data.tags["lmrec.embedding_key"] == first.meta["key"]
    assert {a.path for a in c.list_artifacts(first.run_id, "embeddings")} == {
        "embeddings/embeddings.parquet",
        "embeddings/meta.json",
    }
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.name == "synthetic-items"
    assert run.data.metrics["items"] == first.meta["items"]


def test_a_hugging_face_encoder_runs_on_an_actor_pool(ray_cluster, mlflow_server, catalog, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "story", "toy", *GENRES, *[str(i) for i in range(200)]]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(tmp_path)
    BertModel(
        BertConfig(
            vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(tmp_path)
    encoder = f"hf:{tmp_path}"
    result = run_embed_job(_job(catalog, f"embed.encoder={encoder}", "embed.concurrency=2", "embed.batch_size=32"))
    assert not result.cached and result.meta["dim"] == 32 and result.meta["actors"] == 2
    _same_as_in_process(result, encoder)
