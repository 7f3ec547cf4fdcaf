"""Text encoders: wordllama from its wheel with no network, and Hugging Face encoder and decoder
models built here from configs with random weights (nothing can be downloaded), saved to a folder
and loaded by path as a user's `hf:<path>` would be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmrec.config import ConfigError, load_config
from lmrec.content.config import EmbedJobConfig
from lmrec.content.embed import cache_key, probe_encoder, text_table
from lmrec.models.encoders import EncoderError, EncoderOptions, check_finite, load_encoder

WORDS = "[PAD] [UNK] toy story animation children's comedy aladdin musical alien horror sci-fi genres".split()


def _tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(path)


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    bert, llama = tmp_path_factory.mktemp("bert"), tmp_path_factory.mktemp("llama")
    for path in (bert, llama):
        _tokenizer(path)
    BertModel(
        BertConfig(
            vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(bert)
    LlamaModel(
        LlamaConfig(
            vocab_size=len(WORDS),
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=48,
        )
    ).save_pretrained(llama)
    return {"bert": bert, "llama": llama}


def test_wordllama_loads_offline_and_places_similar_titles_together() -> None:
    enc = load_encoder("wordllama")
    v = enc.encode(
        [
            "Toy Story (1995). Genres: Animation, Children's, Comedy",
            "Aladdin (1992). Genres: Animation, Children's, Comedy, Musical",
            "Alien (1979). Genres: Horror, Sci-Fi",
        ]
    )
    assert v.shape == (3, 256) == (3, enc.dim) and v.dtype == np.float32
    n = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert n[0] @ n[1] > n[0] @ n[2] + 0.2  # two animated comedies, against a horror film


def test_hf_encoder_is_mean_pooled_and_decoder_takes_its_last_token(hf_models: dict[str, Path]) -> None:
    bert = load_encoder(f"hf:{hf_models['bert']}")
    llama = load_encoder(f"hf:{hf_models['llama']}")
    assert (bert.pooling, bert.dim, llama.pooling, llama.dim) == ("mean", 32, "last", 24)
    texts = ["toy story", "alien horror sci-fi genres", "comedy"]
    for enc in (bert, llama):
        both = enc.encode(texts)
        alone = np.stack([enc.encode([t])[0] for t in texts])
        assert both.shape == (3, enc.dim)
        np.testing.assert_allclose(both, alone, atol=1e-5)  # padding in a batch changes nothing
    mean_llama = load_encoder(f"hf:{hf_models['llama']}", EncoderOptions(pooling="mean"))
    assert not np.allclose(mean_llama.encode(texts), llama.encode(texts))


def test_encoders_that_cannot_load_fail_naming_themselves(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match=r"encoder 'hf:.*missing' cannot be loaded"):
        load_encoder(f"hf:{tmp_path / 'missing'}")
    cfg = load_config(EmbedJobConfig, None, [f"embed.encoder=hf:{tmp_path / 'missing'}"])
    with pytest.raises(EncoderError, match="missing' cannot be loaded"):
        probe_encoder(cfg.embed)  # what the job calls before Ray starts
    with pytest.raises(EncoderError, match="unknown encoder 'bert'"):
        load_encoder("bert")
    with pytest.raises(ConfigError, match="embed.encoder"):
        load_config(EmbedJobConfig, None, ["embed.encoder=bert"])
    with pytest.raises(ConfigError, match="embed.pooling"):
        load_config(EmbedJobConfig, None, ["embed.pooling=max"])


def test_non_finite_embeddings_are_refused_with_a_count() -> None:
    v = np.ones((4, 3), np.float32)
    assert check_finite(v, "wordllama") is v
    v[1, 0], v[3, 2] = np.nan, np.inf
    with pytest.raises(EncoderError, match="'hf:x' gave non-finite embeddings for 2 of 4 items"):
        check_finite(v, "hf:x")


def test_cache_key_follows_the_encoder_and_the_text(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"item_id": [1, 2, 3], "text": ["toy story", None, "alien"], "attributes": [["a"], [], []]}),
        tmp_path / "items.parquet",
    )
    texts, without = text_table(tmp_path / "items.parquet")
    assert texts.column("item_id").to_pylist() == [1, 3] and without == 1
    a = load_config(EmbedJobConfig, None, []).embed
    b = load_config(EmbedJobConfig, None, ["embed.pooling=mean"]).embed
    changed = pa.table({"item_id": [1, 3], "text": ["toy story", "aliens"]})
    assert len({cache_key(a, texts), cache_key(b, texts), cache_key(a, changed)}) == 3
    assert cache_key(a, texts) == cache_key(load_config(EmbedJobConfig, None, ["embed.concurrency=4"]).embed, texts)
