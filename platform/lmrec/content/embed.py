"""Item text -> one embedding per item, as a Ray Data `map_batches` over an actor pool.

Each actor loads the encoder once (lmrec.models.encoders) and encodes batches of texts; with
`num_gpus` > 0 the actors sit on GPUs and run bf16. The result is cached under
`<LMREC_HOME>/embeddings/<encoder>-<hash>/` by (encoder, pooling, max length, the texts and their
item ids): a second run with the same catalog text reuses it. Items without text get no row (they
fall back to attributes and ID) and are counted. Written to a temporary folder and renamed, so a
crash never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmrec.content.config import EmbedConfig
from lmrec.data.item_features import EMBEDDINGS, read_embeddings
from lmrec.models.encoders import EncoderError, EncoderOptions, check_finite, load_encoder
from lmrec.paths import lmrec_home

META = "meta.json"


@dataclass
class EmbeddingResult:
    path: Path  # the cache folder: embeddings.parquet (item_id, embedding) + meta.json
    meta: dict[str, Any]
    cached: bool
    run_id: str | None = None


def _options(cfg: EmbedConfig) -> dict[str, Any]:
    device = "cuda" if cfg.num_gpus > 0 else "cpu"
    return {"pooling": cfg.pooling, "max_length": cfg.max_length, "dtype": cfg.dtype, "device": device}


def probe_encoder(cfg: EmbedConfig) -> None:
    """Fail before any Ray resource is requested when the encoder cannot load; the error names it.

    `wordllama` loads in a fraction of a second; for `hf:` only the config and tokenizer are read
    here (the weights load in the actors).
    """
    if cfg.encoder == "wordllama":
        load_encoder("wordllama")
        return
    from transformers import AutoConfig, AutoTokenizer

    name = cfg.encoder[3:]
    try:
        AutoConfig.from_pretrained(name)
        AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # any load failure is reported with the encoder's name
        raise EncoderError(f"encoder {cfg.encoder!r} cannot be loaded: {type(exc).__name__}: {exc}") from exc


def text_table(items_parquet: Path) -> tuple[pa.Table, int]:
    """(item_id, text) of the items that have text, and how many have none."""
    t = pq.read_table(items_parquet)
    if "text" not in t.column_names:
        return pa.table({"item_id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}), t.num_rows
    ids, texts = t.column("item_id").to_pylist(), t.column("text").to_pylist()
    keep = [i for i, x in enumerate(texts) if x]
    table = pa.table(
        {
            "item_id": pa.array([ids[i] for i in keep], pa.int64()),
            "text": pa.array([texts[i] for i in keep], pa.string()),
        }
    )
    return table, t.num_rows - len(keep)


def cache_key(cfg: EmbedConfig, texts: pa.Table) -> str:
    h = hashlib.sha256(json.dumps([cfg.encoder, cfg.pooling, cfg.max_length], sort_keys=True).encode())
    for item, text in zip(texts.column("item_id").to_pylist(), texts.column("text").to_pylist()):
        h.update(f"{item}\x00{text}\x01".encode())
    return h.hexdigest()


def _slug(encoder: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.replace("hf:", "hf-"))[-60:]


class _EncodeBatch:
    """A Ray Data actor: the encoder loads once per actor, then encodes batch after batch."""

    def __init__(self, encoder: str, options: dict[str, Any], batch_size: int) -> None:
        self.encoder = load_encoder(encoder, EncoderOptions(**options, batch_size=min(batch_size, 64)))
        self.name = encoder

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = check_finite(self.encoder.encode([str(t) for t in batch["text"]]), self.name)
        return {"item_id": batch["item_id"], "embedding": vectors}


def embed_items(items_parquet: Path, cfg: EmbedConfig, force: bool = False, engine: str = "ray") -> EmbeddingResult:
    """Embed the text of `items_parquet` (a prepared dataset's items table) with Ray Data.

    `engine="local"` encodes in this process instead (tests and small tools; same cache, same output).
    """
    texts, without_text = text_table(items_parquet)
    key = cache_key(cfg, texts)
    out = lmrec_home() / "embeddings" / f"{_slug(cfg.encoder)}-{key[:16]}"
    if (out / META).exists() and not force:
        return EmbeddingResult(out, json.loads((out / META).read_text()), cached=True)
    if texts.num_rows == 0:
        raise EncoderError(f"{items_parquet}: no item has text to embed (the dataset's item source has none)")
    probe_encoder(cfg)
    t0 = time.perf_counter()
    if engine == "local":
        encode = _EncodeBatch(cfg.encoder, _options(cfg), cfg.batch_size)
        batch = encode({"item_id": texts.column("item_id").to_numpy(), "text": np.asarray(texts.column("text"))})
        item_ids, matrix = np.asarray(batch["item_id"], np.int64), batch["embedding"]
    else:
        item_ids, matrix = _encode_ray(texts, cfg)
    seconds = time.perf_counter() - t0
    matrix = check_finite(matrix, cfg.encoder)
    order = np.argsort(item_ids, kind="stable")
    item_ids, matrix = item_ids[order], matrix[order]
    if len(item_ids) != texts.num_rows or len(np.unique(item_ids)) != len(item_ids):
        raise EncoderError(f"encoder {cfg.encoder!r}: {len(item_ids)} embeddings for {texts.num_rows} texts")
    dim = int(matrix.shape[1])
    meta = {
        "encoder": cfg.encoder,
        "pooling": cfg.pooling,
        "max_length": cfg.max_length,
        "dim": dim,
        "items": int(len(item_ids)),
        "items_without_text": int(without_text),
        "key": key,
        "source": str(items_parquet),
        "seconds": round(seconds, 3),
        "items_per_s": round(len(item_ids) / seconds, 1) if seconds > 0 else None,
        "engine": engine,
        "actors": cfg.concurrency if engine == "ray" else 0,
        "num_gpus_per_actor": cfg.num_gpus,
        "created_unix": int(time.time()),
    }
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    flat = pa.array(matrix.reshape(-1), pa.float32())
    table = pa.table({"item_id": pa.array(item_ids), "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)})
    pq.write_table(table, tmp / EMBEDDINGS)
    (tmp / META).write_text(json.dumps(meta, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return EmbeddingResult(out, meta, cached=False)


def _encode_ray(texts: pa.Table, cfg: EmbedConfig) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, vectors) from a Ray Data actor pool of `cfg.concurrency` encoders."""
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    # enough blocks for every actor of the pool to get work (one Arrow table is one block)
    blocks = max(cfg.concurrency, min(-(-texts.num_rows // cfg.batch_size), 4 * cfg.concurrency))
    ds = (
        ray.data.from_arrow(texts)
        .repartition(blocks)
        .map_batches(
            _EncodeBatch,
            fn_constructor_kwargs={"encoder": cfg.encoder, "options": _options(cfg), "batch_size": cfg.batch_size},
            batch_size=cfg.batch_size,
            batch_format="numpy",
            concurrency=cfg.concurrency,
            num_gpus=cfg.num_gpus or None,
            num_cpus=cfg.num_cpus,
        )
    )
    ids, vectors = [], []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ids.append(np.asarray(batch["item_id"], np.int64))
        vectors.append(np.asarray(batch["embedding"], np.float32))
    return np.concatenate(ids), np.concatenate(vectors)


def load_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids int64 [n], embeddings float32 [n, dim]) from an embedding cache folder."""
    return read_embeddings(path)
