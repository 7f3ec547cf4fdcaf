"""The serving benchmark's summaries: cell-wise medians over rounds, ratios against its targets, the table."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import Any

import numpy as np


def median_cells(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Cell-wise median over rounds of the same nested {section: {level: summary}} structure."""
    first = blocks[0]
    if "req_per_s" in first:  # one load summary
        out = dict(first)
        for key in ("req_per_s", "p50_ms", "p95_ms", "p99_ms", "seconds"):
            out[key] = round(float(np.median([b[key] for b in blocks])), 2)
        out["errors"] = int(sum(b["errors"] for b in blocks))
        if all(b.get("rows_per_forward_mean") is not None for b in blocks):
            out["rows_per_forward_mean"] = round(float(np.median([b["rows_per_forward_mean"] for b in blocks])), 2)
        out["rounds"] = len(blocks)
        return out
    return {k: median_cells([b[k] for b in blocks]) if isinstance(v, dict) else v for k, v in first.items()}


def ratios(r: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Each variant at saturation against its batching-off run, the raw ceiling and the peer; and the targets."""
    sat = f"c{max(args.levels)}"
    ceiling = r["raw_forward"][f"batch_{args.batch}"]["req_per_s"]
    peer = r["fastapi_peer"]["batching_on"][sat]
    out: dict[str, Any] = {}
    for name in args.variants:
        v = r[name]
        on, off = v["batching_on"][sat], v["batching_off"][sat]
        out[name] = {
            "batching_speedup": round(on["req_per_s"] / off["req_per_s"], 2),
            "vs_raw_ceiling": round(on["req_per_s"] / ceiling, 3),
            "cache_hit_p50_over_miss_p50": round(v["cache_hit"]["p50_ms"] / v["cache_miss"]["p50_ms"], 3),
            "throughput_vs_fastapi_peer": round(on["req_per_s"] / peer["req_per_s"], 3),
            "p99_vs_fastapi_peer": round(on["p99_ms"] / peer["p99_ms"], 3),
        }
    out["targets"] = {
        "batching_speedup": ">= 3",
        "vs_raw_ceiling": ">= 0.6",
        "cache_hit_p50_over_miss_p50": "<= 0.2",
        "throughput_vs_fastapi_peer": ">= 1.0",
        "p99_vs_fastapi_peer": "<= 1.0",
    }
    return out


def print_table(r: dict[str, Any], variants: Iterable[str]) -> None:
    """The result as a table: the peer first, then `variants` in that order, then the ratios."""
    print(
        f"\nserving benchmark: {r['model']['size']} model over {r['model']['num_items']} items ({r['model']['dataset']}), "
        f"k={r['k']}, batch {r['max_batch_size']}, {r['torch_threads']} torch threads, {r['cpus']} CPUs, "
        f"{r.get('replicas', 1)} model replica(s), {r.get('peer_workers', 1)} peer worker(s), {r.get('rounds', 1)} round(s)"
    )
    for key, label in (
        ("raw_forward", "last block at the scored position only"),
        ("raw_forward_full_last_block", "last block at every position"),
    ):
        rf = r.get(key)
        if rf:
            print(
                f"raw forward (no HTTP, {rf.get('forward', 'eager')}, {label}): "
                + ", ".join(
                    f"{k}: {v['req_per_s']} req/s ({v['forward_ms']} ms)" for k, v in rf.items() if isinstance(v, dict)
                )
            )
    print(f"{'server':<40}{'setting':<16}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name in ["fastapi_peer", *variants]:
        if name not in r:
            continue
        for section in ("batching_on", "batching_off", "cache_hit", "cache_miss"):
            block = r[name].get(section)
            if not block:
                continue
            rows = block.items() if "req_per_s" not in block else [("c1", block)]
            for level, s in rows:
                setting = f"{section.replace('batching_', 'batch ')} {level}"
                rows_fwd = f"  ({s['rows_per_forward_mean']} rows/forward)" if s.get("rows_per_forward_mean") else ""
                print(
                    f"{name:<40}{setting:<16}{s['req_per_s']:>9.1f}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}"
                    f"{s['errors']:>8}{rows_fwd}"
                )
    print(json.dumps(r["ratios"], indent=1))
