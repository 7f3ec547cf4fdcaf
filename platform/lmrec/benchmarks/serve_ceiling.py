"""The serving benchmark's ceiling: the model forward alone, over thread counts and both last-block forms.

Every configuration (last block at the scored position only, or at every position; each torch thread
count) is warmed until its per-call time settles, then timed once per round, in an order that reverses
every round, so that drift on a shared machine and the first-measured slot hit all of them alike. The
endpoint is held to two of these: the forward with the replica's threads (what its process could do
with no HTTP) and the machine's best (the most any configuration measured here gets from these cores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.benchmarks.serve_model import load_ranker, rank_call, time_calls, warm_until_stable

BLOCKS = {"last_position": True, "full_last_block": False}  # name -> ServeConfig.last_position_only


def config_key(block: str, threads: int) -> str:
    return f"{block}_t{threads}"


def round_order(blocks: list[str], threads: list[int], i: int) -> list[tuple[str, int]]:
    """Round `i`'s order: every (block, threads), alternating blocks within a thread count, reversed on odd rounds."""
    order = [(b, t) for t in threads for b in blocks]
    return order[::-1] if i % 2 else order


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "per_round": [round(v, 1) for v in values],
        "median": round(float(np.median(values)), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def ceiling_rounds(
    model_dir: Path,
    bodies: list[dict[str, Any]],
    batch: int,
    threads: list[int],
    rounds: int,
    forward: str = "auto",
    rows_per_forward: int | None = None,
    device: str = "auto",
    min_seconds: float = 1.0,
) -> dict[str, Any]:
    """Requests/s at batch 1 and `batch` of every (block, threads), `rounds` alternating rounds, with the spread."""
    k = bodies[0]["k"]
    models: dict[str, Any] = {}
    warmup: dict[str, Any] = {}
    for block, last_only in BLOCKS.items():
        loaded, rows = load_ranker(model_dir, threads[0], forward, rows_per_forward, last_only, device)
        hists = [loaded.to_idx(b["history"]) for b in bodies]
        models[block] = {bs: rank_call(loaded, hists, bs, k, rows) for bs in (1, batch)}
        warmup[block] = {f"batch_{bs}": warm_until_stable(call) for bs, call in models[block].items()}
        meta = {"device": loaded.device.type, "forward": loaded.forward, "rows_per_forward": rows}
    times: dict[str, dict[int, list[float]]] = {
        config_key(b, t): {bs: [] for bs in (1, batch)} for b in BLOCKS for t in threads
    }
    orders = []
    for i in range(rounds):
        order = round_order(list(BLOCKS), threads, i)
        orders.append([config_key(b, t) for b, t in order])
        for block, t in order:
            torch.set_num_threads(t)
            for bs, call in models[block].items():
                for j in range(3):  # a resized thread pool's first calls
                    call(j)
                times[config_key(block, t)][bs].append(time_calls(call, min_seconds=min_seconds, start=10 * i))
    configs = {}
    for block in BLOCKS:
        for t in threads:
            key = config_key(block, t)
            configs[key] = {"block": block, "threads": t, "last_position_only": BLOCKS[block]}
            for bs, dts in times[key].items():
                configs[key][f"batch_{bs}"] = {
                    **spread([bs / dt for dt in dts]),
                    "forward_ms": round(float(np.median(dts)) * 1000, 2),
                }
    return {**meta, "threads": threads, "rounds": rounds, "order": orders, "warmup": warmup, "configs": configs}


def replica_view(ceiling: dict[str, Any], block: str, threads: int) -> dict[str, Any]:
    """One configuration in the shape of a single raw-forward measurement (medians as `req_per_s`)."""
    cfg = ceiling["configs"][config_key(block, threads)]
    out = {
        "device": ceiling["device"],
        "forward": ceiling["forward"],
        "rows_per_forward": ceiling["rows_per_forward"],
        "last_position_only": cfg["last_position_only"],
        "threads": threads,
    }
    for key, v in cfg.items():
        if key.startswith("batch_"):
            out[key] = {"req_per_s": v["median"], "forward_ms": v["forward_ms"], "min": v["min"], "max": v["max"]}
    return out


def machine_best(ceiling: dict[str, Any], batch: int) -> dict[str, Any]:
    """The configuration with the highest median requests/s at `batch`: the most these cores gave the forward."""
    key, cfg = max(ceiling["configs"].items(), key=lambda kv: kv[1][f"batch_{batch}"]["median"])
    best = cfg[f"batch_{batch}"]
    return {
        "config": key,
        "block": cfg["block"],
        "threads": cfg["threads"],
        "req_per_s": best["median"],
        "min": best["min"],
        "max": best["max"],
    }


def default_threads(replica_threads: int, cpus: int | None) -> list[int]:
    """1, the replica's and all cores, each once, ascending."""
    return sorted({1, replica_threads, cpus or 1})
