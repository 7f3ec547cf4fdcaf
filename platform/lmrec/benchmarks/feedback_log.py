"""What one FeedbackLog replica costs per served slate (Ray-free; `jobs/benchmark_feedback_log.py` runs `main`).

Every ranking replica ships its slates to the one FeedbackLog replica, so its CPU per
impression bounds the whole app's request rate, and its join window (`max_impressions`
slates kept for feedback) is most of its memory. This measures both on the real
`FeedbackStore`, with slates shaped like the app's (N candidates with scores, K shown):

* ingest: `add_impressions` in the batches replicas ship, plus the timed flushes that write
  the Parquet files (temp file, fsync, rename), in microseconds per impression;
* memory: bytes held per impression in the join window (tracemalloc, after the writes).
"""

from __future__ import annotations

import argparse
import gc
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
    n: int = 4000, candidates: int = 100, k: int = 10, ship_batch: int = 20, file_batch: int = 512, rounds: int = 5
) -> dict[str, Any]:
    records = slates(n, candidates, k)
    with tempfile.TemporaryDirectory() as d:
        ingest_us(records[:200], ship_batch, file_batch, Path(d) / "warmup")  # imports, first files
        per_round = [ingest_us(records, ship_batch, file_batch, Path(d) / f"r{r}") for r in range(rounds)]
        mem = window_bytes(n, candidates, k, Path(d) / "mem")
    best = min(per_round)
    return {
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
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Check the arguments (exit 2 on a bad one), run, print the table, write JSON."""
    p = argparse.ArgumentParser(
        description="Benchmark one FeedbackLog replica's cost per served slate: ingest CPU and join-window memory."
    )
    p.add_argument("--impressions", type=int, default=4000)
    p.add_argument("--candidates", type=int, default=100, help="exploration.num_candidates")
    p.add_argument("--k", type=int, default=10, help="slate size")
    p.add_argument("--ship-batch", type=int, default=20, help="slates per add_impressions call")
    p.add_argument("--file-batch", type=int, default=512, help="feedback.batch_size")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="out/benchmark_feedback_log.json")
    a = p.parse_args(argv)
    for name in ("impressions", "candidates", "k", "ship_batch", "file_batch", "rounds"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.k > a.candidates:
        p.error("--k must be <= --candidates")
    r = run(a.impressions, a.candidates, a.k, a.ship_batch, a.file_batch, a.rounds)
    print(markdown(r))
    print(f"\nwrote {write_json(r, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
