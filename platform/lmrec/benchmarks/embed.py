"""Text-encoder throughput (items/s): in-process, and through the Ray Data actor pool.

Texts are MovieLens-100k's item texts (`u.item`: title, year, genres) when the data is present,
else generated ones of similar length. Encoders:
* `wordllama`: the shipped offline default (pretrained weights inside the wheel);
* `bert-base`: a BERT-base-shaped encoder (12 layers, 768 wide, 110M parameters) built from a config
  with random weights, mean-pooled: nothing can be downloaded here, and throughput depends on the
  shape, not the weights;
* `decoder-125m`: a Llama-shaped decoder-only model (12 layers, 768 wide), last-token pooled.
The two random models use a word-level tokenizer over the texts' words (about as many tokens per
item as a subword tokenizer gives for short titles). Each (encoder, path) cell runs `rounds` times;
the table gives the median and the range.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HF_SHAPES = {
    "bert-base": (
        "bert",
        {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    ),
    "decoder-125m": (
        "llama",
        {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "num_key_value_heads": 12,
            "intermediate_size": 2048,
        },
    ),
}


def item_texts(n: int) -> tuple[list[str], str]:
    """Up to `n` item texts and where they came from."""
    from lmrec.data.items import read_ml100k_items
    from lmrec.paths import data_dir

    path = data_dir() / "movielens" / "ml-100k" / "u.item"
    if path.exists():
        texts = [t for t in read_ml100k_items(path).column("text").to_pylist() if t]
        return (texts * (n // len(texts) + 1))[:n], "ml-100k u.item"
    rng = np.random.default_rng(0)
    words = "story night love war space girl man house river city dark last day".split()
    genres = "Action Comedy Drama Horror Romance Thriller Animation".split()
    return [
        f"{' '.join(rng.choice(words, 3))} ({1950 + i % 50}). Genres: {', '.join(rng.choice(genres, 2))}"
        for i in range(n)
    ], "generated"


def build_hf_model(name: str, texts: list[str], out: Path) -> str:
    """A random model of the named shape with a word-level tokenizer over `texts`; returns `hf:<path>`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    kind, shape = HF_SHAPES[name]
    pre = pre_tokenizers.Whitespace()
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t)})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(out)
    torch.manual_seed(0)
    if kind == "bert":
        BertModel(BertConfig(vocab_size=len(vocab), **shape)).save_pretrained(out)
    else:
        LlamaModel(LlamaConfig(vocab_size=len(vocab), **shape)).save_pretrained(out)
    return f"hf:{out}"


def _in_process(spec: str, texts: list[str], rounds: int) -> list[float]:
    from lmrec.models.encoders import EncoderOptions, load_encoder

    enc = load_encoder(spec, EncoderOptions(batch_size=64))
    enc.encode(texts[:64])  # warm-up: first-call allocations and kernel choices
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        enc.encode(texts)
        rates.append(len(texts) / (time.perf_counter() - t0))
    return rates


def _ray_data(spec: str, texts: list[str], rounds: int, concurrency: int, work: Path) -> list[float]:
    """The `lmrec embed` stage end to end (actor start and encoder load included), cache bypassed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmrec.content.config import EmbedConfig
    from lmrec.content.embed import embed_items

    items = work / f"items-{len(texts)}.parquet"
    pq.write_table(pa.table({"item_id": list(range(1, len(texts) + 1)), "text": texts}), items)
    cfg = EmbedConfig(encoder=spec, concurrency=concurrency, batch_size=128, num_cpus=0.5)
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        embed_items(items, cfg, force=True)
        rates.append(len(texts) / (time.perf_counter() - t0))
    return rates


def run(args: Any) -> dict[str, Any]:
    import os

    import ray
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="lmrec-embed-bench-"))
    os.environ.setdefault("LMREC_HOME", str(work / "home"))
    cells: dict[str, Any] = {}
    texts_all, origin = item_texts(max(args.items, args.hf_items))
    specs = {"wordllama": ("wordllama", texts_all[: args.items])}
    for name in args.hf:
        sub = texts_all[: args.hf_items]
        specs[name] = (build_hf_model(name, sub, work / name), sub)
    for name, (spec, texts) in specs.items():
        cells[f"{name}/in_process"] = {"items": len(texts), "rates": _in_process(spec, texts, args.rounds)}
        print(f"{name} in-process: {cells[f'{name}/in_process']['rates']}", flush=True)
    ray.init(num_cpus=2, log_to_driver=False)
    try:
        for name, (spec, texts) in specs.items():
            for c in args.concurrency:
                key = f"{name}/ray_data_x{c}"
                cells[key] = {"items": len(texts), "rates": _ray_data(spec, texts, args.rounds, c, work)}
                print(f"{key}: {cells[key]['rates']}", flush=True)
    finally:
        ray.shutdown()
    for cell in cells.values():
        r = cell["rates"]
        cell.update(median=statistics.median(r), min=min(r), max=max(r))
    return {
        "texts": origin,
        "mean_words_per_text": round(float(np.mean([len(t.split()) for t in texts_all])), 1),
        "threads": args.threads,
        "rounds": args.rounds,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "unix_time": int(time.time()),
        "cells": cells,
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\nItem-text encoders, items/s ({result['texts']}, {result['threads']} torch threads, {result['rounds']} rounds)"
    )
    print(f"{'encoder / path':<32} {'items':>6} {'median':>9} {'range':>20}")
    for name, c in result["cells"].items():
        spread = f"[{c['min']:.1f}, {c['max']:.1f}]"
        print(f"{name:<32} {c['items']:>6} {c['median']:>9.1f} {spread:>20}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from lmrec.benchmarks.output import write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1682, help="texts for wordllama")
    p.add_argument("--hf-items", type=int, default=256, help="texts for the Hugging Face shapes")
    p.add_argument("--hf", type=lambda s: [x for x in s.split(",") if x], default=list(HF_SHAPES))
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="out/benchmark_embed.json")
    args = p.parse_args(argv)
    bad = sorted(set(args.hf) - set(HF_SHAPES))
    if bad or args.rounds < 1 or min(args.concurrency) < 1:
        p.error(f"--hf from {sorted(HF_SHAPES)} (got {bad}); --rounds and --concurrency >= 1")
    result = run(args)
    print_table(result)
    print(f"wrote {write_json(result, args.out)}")
    return 0
