"""What a FeedbackLog shard costs per served slate (Ray-free; `jobs/benchmark_feedback_log.py` runs `main`).

Every ranking replica ships each slate to the shard that owns it, so a shard's CPU per
impression bounds the slates/s it takes, and its join window (`max_impressions` slates kept
for feedback) is most of its memory. This measures both on the real `FeedbackStore`, with
slates shaped like the app's (N candidates with scores, K shown):

* ingest: `add_impressions` in the batches replicas ship, plus the timed flushes that write
  the Parquet files (temp file, fsync, rename), in microseconds per impression (one store);
* sharded ingest at 1, 2, 4 shards: each shard a separate OS process (forked; the shard
  deployments are one process each) running its `FeedbackStore`, fed its owner's part of every
  shipped batch (`split_by_owner`) into one shared log folder, all started together. Reports
  CPU µs per slate over all shards and slates/s over the wall time of the slowest shard: the
  real per-shard work and parallelism, without the Ray handle hop (a shard's handle call is
  the same for any N). On a machine with fewer cores than shards they share the cores;
* memory: bytes held per impression in the join window (tracemalloc, after the writes).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.benchmarks.output import write_json
from lmrec.serving.config import FeedbackConfig
from lmrec.serving.feedback import FeedbackStore
from lmrec.serving.shards import split_by_owner

POLICY = {"type": "epsilon_greedy", "epsilon": 0.1, "seed": 0}


def slates(n: int, candidates: int, k: int, num_items: int = 1349, seed: int = 0) -> list[dict[str, Any]]:
    """`n` impressions as a replica ships them (lists, as `RankerCore.recommend` builds them)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cand = rng.choice(num_items, candidates, replace=False)
        scores = np.sort(rng.normal(size=candidates))[::-1]
        shown = rng.choice(candidates, k, replace=False)
        out.append(
            {
                "request_id": uuid.uuid4().hex,
                "candidates": cand.tolist(),
                "scores": scores.tolist(),
                "slate": cand[shown].tolist(),
                "propensities": [0.5] * k,
                "policy": "epsilon_greedy",
                "policy_params": dict(POLICY),
                "user_id": None,
                "model_version": "lmrec-seqrec/1",
            }
        )
    return out


def ingest_us(records: list[dict[str, Any]], ship_batch: int, file_batch: int, root: Path) -> float:
    """Wall microseconds per impression: add_impressions per shipped batch, flush as the app does."""
    store = FeedbackStore(FeedbackConfig(batch_size=file_batch, max_delay_s=0.05), root)
    t0 = time.perf_counter()
    for i in range(0, len(records), ship_batch):
        store.add_impressions(records[i : i + ship_batch])
        store.flush_impressions()
    store.flush_impressions(force=True)
    return (time.perf_counter() - t0) / len(records) * 1e6


def _shard_worker(
    shard: int, shards: int, batches: list[list[dict[str, Any]]], root: Path, file_batch: int, start: Any, out: Any
) -> None:
    """One shard's process: ingest its parts of the shipped batches as the deployment would."""
    store = FeedbackStore(FeedbackConfig(batch_size=file_batch, max_delay_s=0.05, shards=shards), root, shard)
    start.wait()  # every shard starts together
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in batches:
        if batch:
            store.add_impressions(batch)
        store.flush_impressions()
    store.flush_impressions(force=True)
    out.put((shard, time.perf_counter() - t0, time.process_time() - c0, store.stats()["impressions_logged"]))


def sharded_ingest(
    records: list[dict[str, Any]], shards: int, ship_batch: int, file_batch: int, root: Path
) -> dict[str, float]:
    """`records` ingested by `shards` shard processes at once: CPU µs per slate (all shards) and slates/s."""
    ctx = mp.get_context("fork")  # the children inherit the records and the parent's imports
    per_shard: list[list[list[dict[str, Any]]]] = [[] for _ in range(shards)]
    for i in range(0, len(records), ship_batch):
        for shard, part in enumerate(split_by_owner(records[i : i + ship_batch], shards)):
            per_shard[shard].append(part)
    start, out = ctx.Barrier(shards), ctx.Queue()
    procs = [
        ctx.Process(target=_shard_worker, args=(i, shards, per_shard[i], root, file_batch, start, out))
        for i in range(shards)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"a shard process exited with {proc.exitcode}")
    assert sum(r[3] for r in results) == len(records)  # every slate went to exactly one shard
    wall = max(r[1] for r in results)
    return {"cpu_us_per_slate": sum(r[2] for r in results) / len(records) * 1e6, "slates_per_s": len(records) / wall}


def window_bytes(n: int, candidates: int, k: int, root: Path) -> float:
    """Bytes the store still holds per impression once the records are written (join window)."""
    gc.collect()
    tracemalloc.start()
    try:
        records = slates(n, candidates, k, seed=1)  # allocated while tracing, as unpickled in a replica
        store = FeedbackStore(FeedbackConfig(batch_size=512, max_impressions=max(n, 100)), root)
        for i in range(0, n, 20):
            store.add_impressions(records[i : i + 20])
        store.flush_impressions(force=True)
        del records
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(store._impressions) == n
    return held / n


def run(
    n: int = 4000,
    candidates: int = 100,
    k: int = 10,
    ship_batch: int = 20,
    file_batch: int = 512,
    rounds: int = 5,
    shard_counts: tuple[int, ...] = (1, 2, 4),
) -> dict[str, Any]:
    records = slates(n, candidates, k)
    with tempfile.TemporaryDirectory() as d:
        ingest_us(records[:200], ship_batch, file_batch, Path(d) / "warmup")  # imports, first files
        per_round = [ingest_us(records, ship_batch, file_batch, Path(d) / f"r{r}") for r in range(rounds)]
        sharded: dict[str, Any] = {}
        for shards in shard_counts:
            runs = [
                sharded_ingest(records, shards, ship_batch, file_batch, Path(d) / f"s{shards}-{r}")
                for r in range(rounds)
            ]
            cpu = [r["cpu_us_per_slate"] for r in runs]
            rate = [r["slates_per_s"] for r in runs]
            sharded[str(shards)] = {
                "cpu_us_per_slate": {"best": min(cpu), "median": statistics.median(cpu), "rounds": cpu},
                "slates_per_s": {"best": max(rate), "median": statistics.median(rate), "rounds": rate},
            }
        mem = window_bytes(n, candidates, k, Path(d) / "mem")
    best = min(per_round)
    return {
        "cpu_count": os.cpu_count(),
        "sharded_ingest": sharded,
        "impressions": n,
        "candidates": candidates,
        "k": k,
        "ship_batch": ship_batch,
        "file_batch": file_batch,
        "ingest_us_per_impression": {"best": best, "median": statistics.median(per_round), "rounds": per_round},
        "impressions_per_core_second": 1e6 / best,
        "join_window_bytes_per_impression": mem,
        "join_window_mib_at_default_max": mem * FeedbackConfig().max_impressions / 2**20,
    }


def markdown(r: dict[str, Any]) -> str:
    ing = r["ingest_us_per_impression"]
    return "\n".join(
        [
            f"FeedbackLog, {r['impressions']} slates of {r['k']} from {r['candidates']} candidates, "
            f"shipped {r['ship_batch']} at a time, files of {r['file_batch']}:",
            "",
            "| measure | value |",
            "|---|---|",
            f"| ingest, µs per impression (best / median of {len(ing['rounds'])}) | {ing['best']:.1f} / {ing['median']:.1f} |",
            f"| impressions per second of one core (best) | {r['impressions_per_core_second']:,.0f} |",
            f"| join window, bytes per impression held | {r['join_window_bytes_per_impression']:,.0f} |",
            f"| join window at max_impressions {FeedbackConfig().max_impressions:,} | {r['join_window_mib_at_default_max']:,.0f} MiB |",
            "",
            f"Sharded ingest, each shard its own process, {r['cpu_count']} CPUs "
            f"(best / median of {len(ing['rounds'])} rounds):",
            "",
            "| shards | CPU µs per slate (all shards) | slates/s |",
            "|---|---|---|",
            *(
                f"| {n} | {v['cpu_us_per_slate']['best']:.1f} / {v['cpu_us_per_slate']['median']:.1f} "
                f"| {v['slates_per_s']['best']:,.0f} / {v['slates_per_s']['median']:,.0f} |"
                for n, v in r["sharded_ingest"].items()
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Check the arguments (exit 2 on a bad one), run, print the table, write JSON."""
    p = argparse.ArgumentParser(
        description="Benchmark a FeedbackLog shard's cost per served slate (ingest CPU at 1, 2, 4 shards; join-window memory)."
    )
    p.add_argument("--impressions", type=int, default=4000)
    p.add_argument("--candidates", type=int, default=100, help="exploration.num_candidates")
    p.add_argument("--k", type=int, default=10, help="slate size")
    p.add_argument("--ship-batch", type=int, default=20, help="slates per add_impressions call")
    p.add_argument("--file-batch", type=int, default=512, help="feedback.batch_size")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--shards", default="1,2,4", help="shard counts to measure, comma-separated")
    p.add_argument("--out", default="out/benchmark_feedback_log.json")
    a = p.parse_args(argv)
    for name in ("impressions", "candidates", "k", "ship_batch", "file_batch", "rounds"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.k > a.candidates:
        p.error("--k must be <= --candidates")
    try:
        shard_counts = tuple(int(x) for x in a.shards.split(","))
    except ValueError:
        p.error(f"--shards must be comma-separated integers, got {a.shards!r}")
    if not shard_counts or min(shard_counts) < 1:
        p.error("--shards must list counts >= 1")
    r = run(a.impressions, a.candidates, a.k, a.ship_batch, a.file_batch, a.rounds, shard_counts)
    print(markdown(r))
    print(f"\nwrote {write_json(r, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
