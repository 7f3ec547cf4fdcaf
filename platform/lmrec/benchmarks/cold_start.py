"""The cold-start protocol of issue 22: rank items that no training interaction mentions.

Per dataset: prepare it with its item content; take the `--cold-fraction` of items whose first
interaction comes latest (by timestamp on MovieLens, by relative sequence position on the
Amazon SASRec files, which carry order only); remove every training interaction with them
(lmrec.data.cold_start); train an ID-only and a fused model (same size, same loop, best epoch
by validation NDCG@10) on what is left; score every user's test target over the full catalog,
history excluded, and split users by whether that target is cold. Baselines: popularity, and
content-only nearest neighbours of the history (cosine to the mean content vector of the
history: unit text embedding and unit attribute multi-hot side by side). Each seed is one
round; ratios are per round, reported as median and range. Cost: training seconds per epoch of
both models, and serving forward latency of the ID-only model vs the fused model's frozen table
(what serving runs), in the same process.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DATASETS: dict[str, dict[str, Any]] = {
    "ml-100k": {"dataset": "ml-100k", "text": "wordllama", "attributes": True},
    "beauty": {"dataset": "sasrec:Beauty", "text": None, "attributes": True},
    "synthetic": {"dataset": "synthetic", "text": None, "attributes": True},
}


def _train(prepared: Path, emb: str | None, spec: dict[str, Any], fused: bool, seed: int, args: Any) -> dict[str, Any]:
    from lmrec.config import load_config
    from lmrec.models.artifacts import load_model_dir
    from lmrec.training.config import TrainJobConfig
    from lmrec.training.context import LocalContext
    from lmrec.training.loop import run_training
    from lmrec.training.steps import EXPORT_DIR

    overrides = [
        "train.strategy=none",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        f"train.lr={args.lr}",
        f"train.seed={seed}",
        f"train.early_stopping_patience={args.patience}",
        "train.checkpoint_every_epochs=0",
        "train.log_every_steps=100000",
        f"model.dropout={args.dropout}",
        f"model.max_seq_len={args.max_seq_len}",
        "eval.protocols=[full]",
        f"eval.every_epochs={args.eval_every}",
    ]
    if fused:
        overrides += [f"model.content.fusion={args.fusion}", f"model.content.id_dropout={args.id_dropout}"]
        if spec["text"]:
            overrides.append(f"model.content.text={spec['text']}")
        if spec["attributes"]:
            overrides.append("model.content.attributes=true")
    cfg = load_config(TrainJobConfig, None, overrides)
    cfg.prepared_path = str(prepared)
    cfg.text_embeddings_path = emb if fused and spec["text"] else None
    with tempfile.TemporaryDirectory(prefix="lmrec-cold-") as tmp:
        ctx = LocalContext(tmp)
        t0 = time.perf_counter()
        final = run_training(cfg, ctx)
        seconds = time.perf_counter() - t0
        model, _, _ = load_model_dir(next(Path(tmp).rglob(EXPORT_DIR)))
    epochs = [r for r in ctx.reports if "epoch_seconds" in r]
    return {
        "model": model,
        "seconds": seconds,
        "epochs": len(epochs),
        "epoch_seconds": statistics.median(r["epoch_seconds"] for r in epochs),
        "valid_ndcg10": final.get("valid/full/ndcg@10"),
        "parameters": model.num_parameters(),
    }


def _latency(id_model: Any, fused_model: Any, data: Any, max_len: int, rounds: int) -> dict[str, Any]:
    """Forward ms (median over rounds) of the ID-only model and the fused model's frozen table."""
    import torch

    from lmrec.data.sequences import left_pad
    from lmrec.models.seqrec import freeze_items

    t0 = time.perf_counter()
    frozen = freeze_items(fused_model)
    freeze_ms = (time.perf_counter() - t0) * 1e3
    out: dict[str, Any] = {"freeze_ms": round(freeze_ms, 2)}
    for batch in (1, 32):
        x = torch.from_numpy(left_pad([data.history(u, "test") for u in range(batch)], max_len))
        times: dict[str, list[float]] = {"id": [], "fused": []}
        with torch.inference_mode():
            for _ in range(rounds):
                for name, m in (("id", id_model), ("fused", frozen)):
                    t = time.perf_counter()
                    m(x)
                    times[name].append((time.perf_counter() - t) * 1e3)
        ratio = [f / i for f, i in zip(times["fused"], times["id"])]
        out[f"batch{batch}"] = {
            "id_ms": statistics.median(times["id"]),
            "fused_ms": statistics.median(times["fused"]),
            "ratio_median": statistics.median(ratio),
            "ratio_range": [min(ratio), max(ratio)],
        }
    return out


def run_dataset(name: str, args: Any) -> dict[str, Any]:
    import torch

    from lmrec.data.cold_start import cold_items, write_cold_start
    from lmrec.data.config import DataConfig
    from lmrec.data.item_features import load_item_features
    from lmrec.data.prepare import ITEMS, prepare_dataset
    from lmrec.data.sequences import SequenceData
    from lmrec.evaluation.cold_start import content_knn_scorer, content_vectors, split_metrics, target_ranks
    from lmrec.evaluation.protocols import popularity_scorer
    from lmrec.paths import lmrec_home

    spec = DATASETS[name]
    prepared = prepare_dataset(DataConfig(dataset=spec["dataset"]), engine="local")
    emb = None
    if spec["text"]:
        from lmrec.content.config import EmbedConfig
        from lmrec.content.embed import embed_items

        if args.embed_engine == "ray":
            import ray

            if not ray.is_initialized():
                ray.init(num_cpus=args.threads, log_to_driver=False)
        emb = str(embed_items(prepared.path / ITEMS, EmbedConfig(encoder=spec["text"]), engine=args.embed_engine).path)
        if args.embed_engine == "ray":
            ray.shutdown()  # training below is in-process: no Ray processes beside it
    full = SequenceData.load(prepared.path)
    cold, order = cold_items(full, args.cold_fraction)
    out = (
        lmrec_home()
        / "benchmarks"
        / "cold_start"
        / f"{name}-{prepared.manifest['config_hash'][:12]}-{args.cold_fraction}"
    )
    write_cold_start(full, cold, prepared.path, out, {"fraction": args.cold_fraction, "order": order})
    data = SequenceData.load(out, with_meta=False)
    is_cold = np.zeros(data.num_items + 1, bool)
    is_cold[cold] = True
    cold_target = is_cold[[data.target(u, "test") for u in range(data.num_users)]]
    feats = load_item_features(out, emb, spec["attributes"])
    vectors = content_vectors(feats.text, feats.attrs, feats.num_attributes)
    knn_ranks = target_ranks(content_knn_scorer(vectors), data, args.max_seq_len)
    result: dict[str, Any] = {
        "dataset": spec["dataset"],
        "content": {"text": spec["text"], "attributes": spec["attributes"]},
        "cold_start": json.loads((out / "manifest.json").read_text())["cold_start"] | {"cold_item_idx": None},
        "baselines": {
            "popularity": split_metrics(target_ranks(popularity_scorer(data), data, args.max_seq_len), cold_target),
            "content_knn": split_metrics(
                target_ranks(content_knn_scorer(vectors), data, args.max_seq_len), cold_target
            ),
        },
        "rounds": [],
    }
    for seed in args.seeds:
        row: dict[str, Any] = {"seed": seed}
        models, ranks = {}, {}
        for variant in ("id", "fused"):
            trained = _train(out, emb, spec, variant == "fused", seed, args)
            models[variant] = trained.pop("model")
            m = models[variant].eval()

            def scorer(x: torch.Tensor, m: Any = m) -> torch.Tensor:
                return m(x)

            ranks[variant] = target_ranks(scorer, data, args.max_seq_len)
            trained["metrics"] = split_metrics(ranks[variant], cold_target)
            row[variant] = trained
            print(f"[cold-start] {name} seed {seed} {variant}: {_short(trained['metrics'])}", flush=True)
        b, f, i = result["baselines"], row["fused"]["metrics"], row["id"]["metrics"]
        row["ratios"] = {
            "fused_vs_knn_cold": _ratio(f["cold/ndcg@10"], b["content_knn"]["cold/ndcg@10"]),
            "fused_vs_popularity_cold": _ratio(f["cold/ndcg@10"], b["popularity"]["cold/ndcg@10"]),
            "fused_vs_id_warm": _ratio(f["warm/ndcg@10"], i["warm/ndcg@10"]),
        }
        # paired bootstrap over users (95 % interval) of the two ratios that compare models on the same users
        row["bootstrap95"] = {
            "fused_vs_knn_cold": _bootstrap(ranks["fused"][cold_target], knn_ranks[cold_target], seed),
            "fused_vs_id_warm": _bootstrap(ranks["fused"][~cold_target], ranks["id"][~cold_target], seed),
        }
        row["latency"] = _latency(models["id"], models["fused"], data, args.max_seq_len, args.latency_rounds)
        result["rounds"].append(row)
    result["summary"] = {k: _spread([r["ratios"][k] for r in result["rounds"]]) for k in result["rounds"][0]["ratios"]}
    return result


def _ndcg10(ranks: np.ndarray) -> np.ndarray:
    return np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)


def _bootstrap(a_ranks: np.ndarray, b_ranks: np.ndarray, seed: int, n: int = 2000) -> list[float] | None:
    """95 % interval of mean NDCG@10(a) / mean NDCG@10(b), users resampled with replacement (paired)."""
    a, b = _ndcg10(a_ranks), _ndcg10(b_ranks)
    if len(a) == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n, len(a)))
    num, den = a[idx].mean(1), b[idx].mean(1)
    ratios = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return [float(lo), float(hi)]


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _spread(values: list[float | None]) -> dict[str, Any]:
    v = [x for x in values if x is not None]
    if not v:
        return {"median": None, "min": None, "max": None, "rounds": len(values)}
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "rounds": len(values)}


def _short(m: dict[str, float]) -> str:
    return f"cold NDCG@10 {m['cold/ndcg@10']:.4f}  warm NDCG@10 {m['warm/ndcg@10']:.4f}  all {m['all/ndcg@10']:.4f}"


TARGETS = {"fused_vs_knn_cold": 1.5, "fused_vs_popularity_cold": 2.0, "fused_vs_id_warm": 0.99}


def print_table(results: dict[str, Any]) -> None:
    for name, r in results["datasets"].items():
        cs = r["cold_start"]
        print(
            f"\n{name}: {cs['cold_items']} cold items ({cs['order']}), test targets cold {cs['test_targets_cold']}, "
            f"warm {cs['test_targets_warm']}"
        )
        print(f"{'model':<14}{'cold NDCG@10':>14}{'cold HR@10':>12}{'warm NDCG@10':>14}{'warm HR@10':>12}")
        rows = [(k, v) for k, v in r["baselines"].items()]
        for rd in r["rounds"]:
            rows += [(f"id s{rd['seed']}", rd["id"]["metrics"]), (f"fused s{rd['seed']}", rd["fused"]["metrics"])]
        for label, m in rows:
            print(
                f"{label:<14}{m['cold/ndcg@10']:>14.4f}{m['cold/hr@10']:>12.4f}{m['warm/ndcg@10']:>14.4f}"
                f"{m['warm/hr@10']:>12.4f}"
            )
        for k, s in r["summary"].items():
            met = s["min"] is not None and s["min"] >= TARGETS[k]
            med = "n/a" if s["median"] is None else f"{s['median']:.2f}"
            rng = "" if s["min"] is None else f" [{s['min']:.2f}, {s['max']:.2f}]"
            print(
                f"  {k}: {med}{rng} over {s['rounds']} round(s), target >= {TARGETS[k]}: {'met' if met else 'not met'}"
            )
        for rd in r["rounds"]:
            print(f"  seed {rd['seed']} paired bootstrap 95 % intervals: {rd['bootstrap95']}")
        for rd in r["rounds"]:
            lat = rd["latency"]
            print(
                f"  seed {rd['seed']} cost: train s/epoch id {rd['id']['epoch_seconds']:.2f} fused "
                f"{rd['fused']['epoch_seconds']:.2f}; forward ms b1 id {lat['batch1']['id_ms']:.2f} fused "
                f"{lat['batch1']['fused_ms']:.2f}, b32 id {lat['batch32']['id_ms']:.2f} fused {lat['batch32']['fused_ms']:.2f}"
            )


def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=lambda s: s.split(","), default=["ml-100k", "beauty"])
    p.add_argument("--cold-fraction", type=float, default=0.15)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--max-seq-len", type=int, default=50)
    p.add_argument("--fusion", default="gate")
    p.add_argument("--id-dropout", type=float, default=0.3)
    p.add_argument("--latency-rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--embed-engine", choices=["ray", "local"], default="ray", help="item text embedding stage")
    p.add_argument("--out", default="out/benchmark_cold_start.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "benchmark": "cold_start",
        "args": {k: v for k, v in vars(args).items()},
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
        "datasets": {},
    }
    for name in args.datasets:
        results["datasets"][name] = run_dataset(name, args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    print_table(results)
    print(f"\nwrote {args.out}")
    return 0
