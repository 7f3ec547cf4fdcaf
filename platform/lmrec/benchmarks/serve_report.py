"""The serving benchmark's summaries: cell-wise medians over rounds, ratios against its targets, the table."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import Any

import numpy as np

# the numeric fields of a load summary (closed or open loop) that a median over rounds summarises
MEDIAN_KEYS = (
    "req_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "seconds",
    "offered_req_per_s",
    "send_lag_p50_ms",
    "send_lag_p99_ms",
    "max_in_flight",
)


def median_cells(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Cell-wise median over rounds of the same nested {section: {level: summary}} structure."""
    first = blocks[0]
    if "req_per_s" in first:  # one load summary
        out = dict(first)
        for key in MEDIAN_KEYS:
            if all(key in b for b in blocks):
                out[key] = round(float(np.median([b[key] for b in blocks])), 2)
        out["errors"] = int(sum(b["errors"] for b in blocks))
        if all(b.get("rows_per_forward_mean") is not None for b in blocks):
            out["rows_per_forward_mean"] = round(float(np.median([b["rows_per_forward_mean"] for b in blocks])), 2)
        out["rounds"] = len(blocks)
        return out
    return {k: median_cells([b[k] for b in blocks]) if isinstance(v, dict) else v for k, v in first.items()}


def ratios(r: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Each variant at saturation against its batching-off run, both raw ceilings and the peer; and the targets.

    Two ceilings: the forward with the replica's torch threads (`raw_forward`) and the machine's best
    forward over the thread counts and block forms measured (`raw_ceiling.machine_best`); the stricter
    one decides the >= 0.6 target. The `_range` entries divide by the ceiling's max and min over rounds.
    """
    sat = f"c{max(args.levels)}"
    ceiling = r["raw_forward"][f"batch_{args.batch}"]
    best = r.get("raw_ceiling", {}).get("machine_best", {"req_per_s": ceiling["req_per_s"]})
    peer = r["fastapi_peer"]["batching_on"][sat]
    out: dict[str, Any] = {}
    for name in args.variants:
        v = r[name]
        on, off = v["batching_on"][sat], v["batching_off"][sat]
        rps = on["req_per_s"]
        out[name] = {
            "batching_speedup": round(rps / off["req_per_s"], 2),
            "vs_raw_ceiling": round(rps / ceiling["req_per_s"], 3),
            "vs_machine_ceiling": round(rps / best["req_per_s"], 3),
            "cache_hit_p50_over_miss_p50": round(v["cache_hit"]["p50_ms"] / v["cache_miss"]["p50_ms"], 3),
            "throughput_vs_fastapi_peer": round(rps / peer["req_per_s"], 3),
            "p99_vs_fastapi_peer": round(on["p99_ms"] / peer["p99_ms"], 3),
        }
        for key, ref in (("vs_raw_ceiling_range", ceiling), ("vs_machine_ceiling_range", best)):
            if "min" in ref and "max" in ref:
                out[name][key] = [round(rps / ref["max"], 3), round(rps / ref["min"], 3)]
    out["targets"] = {
        "batching_speedup": ">= 3",
        "vs_raw_ceiling": ">= 0.6 (the replica's threads)",
        "vs_machine_ceiling": ">= 0.6 (the machine's best forward; the stricter ratio, which decides 'met')",
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
    ceiling = r.get("raw_ceiling")
    if ceiling:
        print(
            f"raw forward (no HTTP, {ceiling['forward']}), req/s: median [min-max] of {ceiling['rounds']} alternating "
            f"rounds, each after a warm-up to a steady per-call time"
        )
        for key, cfg in ceiling["configs"].items():
            cells = [f"{k}: {v['median']} [{v['min']}-{v['max']}]" for k, v in cfg.items() if k.startswith("batch_")]
            print(f"  {key:<24}" + ", ".join(cells))
        best = ceiling["machine_best"]
        print(f"  machine's best at batch {r['max_batch_size']}: {best['config']}, {best['req_per_s']} req/s")
        cpu = ceiling.get("cpu_by_process")
        if cpu:  # another job's CPU here means a ceiling measured low
            others = [f"{row['process'][:40]} {row['cores']}" for row in cpu["top"][:4]]
            print(f"  CPU meanwhile, cores of all processes: {cpu['cores_total']} ({'; '.join(others)})")
    print(f"{'server':<40}{'setting':<16}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name in ["fastapi_peer", *variants]:
        if name not in r:
            continue
        for section in ("batching_on", "batching_off", "cache_hit", "cache_miss", "open_loop"):
            block = r[name].get(section)
            if not block:
                continue
            rows = block.items() if "req_per_s" not in block else [("c1", block)]
            for level, s in rows:
                setting = f"{section.replace('batching_', 'batch ').replace('_', ' ')} {level}"
                rows_fwd = f"  ({s['rows_per_forward_mean']} rows/forward)" if s.get("rows_per_forward_mean") else ""
                if "offered_req_per_s" in s:
                    rows_fwd = f"  (offered {s['offered_req_per_s']}/s, send lag p99 {s['send_lag_p99_ms']} ms)"
                print(
                    f"{name:<40}{setting:<16}{s['req_per_s']:>9.1f}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}"
                    f"{s['errors']:>8}{rows_fwd}"
                )
    print(json.dumps(r["ratios"], indent=1))


def ceiling_status(ratio: float, ratio_range: list[float] | None, target: float = 0.6) -> str:
    """'met' when the ratio meets `target` over the ceiling's whole spread, 'missed' when it misses it over
    the whole spread, else 'not significant'."""
    lo, hi = ratio_range or (ratio, ratio)
    if min(lo, ratio) >= target:
        return "met"
    if max(hi, ratio) < target:
        return "missed"
    return "not significant"


def print_ceiling_summary(r: dict[str, Any], variants: Iterable[str]) -> None:
    """One line per variant: the endpoint at saturation against both ceilings, and the target's status
    by the stricter (the machine's best)."""
    rf, best = r["raw_forward"], r.get("raw_ceiling", {}).get("machine_best")
    for name in variants:
        q = r["ratios"].get(name)
        if not q:
            continue
        line = f"{name}: {q['vs_raw_ceiling']:.3f} of the forward with the replica's {rf.get('threads', '?')} thread(s)"
        if best:
            status = ceiling_status(q["vs_machine_ceiling"], q.get("vs_machine_ceiling_range"))
            line += (
                f", {q['vs_machine_ceiling']:.3f} of the machine's best ({best['config']}, {best['req_per_s']} req/s;"
                f" over its spread {q.get('vs_machine_ceiling_range')}): >= 0.6 {status}"
            )
        print(line)
