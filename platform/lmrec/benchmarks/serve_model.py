"""The serving benchmark's model and requests, and the ceiling it is held to: the model forward alone.

A randomly initialised model over a real catalog (latency does not depend on weights),
explicit-history request bodies from real user prefixes, and `raw_ceiling`: requests/s of
`LoadedModel.rank` with no HTTP and no Serve, on the device the replicas use. Its pieces (load, warm
up to a steady per-call time, time) are what serve_ceiling alternates over configurations and rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.config import to_dict
from lmrec.data.config import DataConfig
from lmrec.data.prepare import prepare_dataset
from lmrec.data.sequences import SequenceData
from lmrec.models.artifacts import save_model_dir
from lmrec.models.seqrec import SeqRecModel, init_weights_
from lmrec.models.sizes import build_config


def make_model(data_cfg: DataConfig, size: str, out: Path) -> tuple[Path, SequenceData]:
    """A randomly initialised model over the dataset's catalog (latency does not depend on weights)."""
    prepared = prepare_dataset(data_cfg)
    data = SequenceData.load(prepared.path, with_meta=False)
    cfg = build_config(size, data.num_items, dropout=0.0)
    model = SeqRecModel(cfg)
    init_weights_(model, 0)
    save_model_dir(
        out,
        cfg,
        model.state_dict(),
        prepared.manifest["item_ids"],
        {"dataset": prepared.manifest["dataset"], "data_config": to_dict(data_cfg)},
    )
    return out, data


def request_bodies(data: SequenceData, n: int, k: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` distinct explicit-history requests (cache misses), from real user prefixes."""
    rng = np.random.default_rng(seed)
    item_ids = np.asarray(data.manifest["item_ids"])
    bodies, seen = [], set()
    while len(bodies) < n:
        u = int(rng.integers(data.num_users))
        seq = data.sequence(u)
        end = int(rng.integers(3, len(seq) + 1))
        hist = item_ids[seq[max(0, end - 50) : end] - 1].tolist()
        key = tuple(hist)
        if key in seen:
            continue
        seen.add(key)
        bodies.append({"history": hist, "k": k, "explore": False})
    return bodies


def load_ranker(
    model_dir: Path | str,
    threads: int,
    forward: str = "auto",
    rows_per_forward: int | None = None,
    last_position_only: bool = True,
    device: str = "auto",
) -> tuple[Any, int]:
    """The replicas' `LoadedModel` for `model_dir` and the rows per forward it resolves to on its device."""
    from lmrec.config import from_dict
    from lmrec.serving.config import ServeConfig
    from lmrec.serving.runtime import load_model

    torch.set_num_threads(threads)
    cfg = from_dict(
        ServeConfig,
        {
            "model_uri": str(model_dir),
            "torch_threads": threads,
            "forward": forward,
            "device": device,
            "batch": {"rows_per_forward": rows_per_forward},
            "last_position_only": last_position_only,
        },
    )
    loaded = load_model(str(model_dir), cfg)
    return loaded, cfg.batch.forward_rows(loaded.device.type)


def rank_call(loaded: Any, hists: list[np.ndarray], bs: int, k: int, rows: int) -> Callable[[int], None]:
    """call(i): rank the i-th batch of `bs` histories (cycling through `hists`), as a replica's forward does."""

    def call(i: int) -> None:
        chunk = [hists[(i * bs + j) % len(hists)] for j in range(bs)]
        loaded.rank(chunk, k, [True] * bs, rows)

    return call


def warm_until_stable(
    call: Callable[[int], None], min_calls: int = 10, max_calls: int = 100, window: int = 5, tol: float = 0.1
) -> dict[str, Any]:
    """Call until the median time of the last `window` calls is within `tol` of the `window` before.

    The compiled (TorchScript) forward re-optimises itself over its first calls of each shape, so one
    warm-up call leaves slow calls in the timed ones. Stops at `max_calls` on a machine too noisy to settle.
    """
    times: list[float] = []
    for i in range(max_calls):
        t0 = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - t0)
        if len(times) >= max(min_calls, 2 * window):
            last, before = np.median(times[-window:]), np.median(times[-2 * window : -window])
            if abs(last - before) <= tol * before:
                return {
                    "calls": len(times),
                    "stable": True,
                    "first_ms": round(times[0] * 1000, 2),
                    "last_ms": round(float(last) * 1000, 2),
                }
    return {
        "calls": len(times),
        "stable": False,
        "first_ms": round(times[0] * 1000, 2),
        "last_ms": round(float(np.median(times[-window:])) * 1000, 2),
    }


def time_calls(call: Callable[[int], None], min_calls: int = 10, min_seconds: float = 1.0, start: int = 0) -> float:
    """Seconds per call, over at least `min_calls` calls and `min_seconds`."""
    n, t0 = 0, time.perf_counter()
    while n < min_calls or time.perf_counter() - t0 < min_seconds:
        call(start + n)
        n += 1
    return (time.perf_counter() - t0) / n


def raw_ceiling(
    model_dir: Path,
    bodies: list[dict[str, Any]],
    batch: int,
    threads: int,
    forward: str = "auto",
    rows_per_forward: int | None = None,
    repeats: int = 20,
    last_position_only: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Requests/s of the model forward alone (no HTTP, no Serve) at batch `batch` and 1, after a warm-up
    that lasts until the per-call time settles. One configuration, one pass: serve_ceiling alternates several."""
    loaded, rows = load_ranker(model_dir, threads, forward, rows_per_forward, last_position_only, device)
    hists = [loaded.to_idx(b["history"]) for b in bodies]
    out: dict[str, Any] = {
        "device": loaded.device.type,
        "forward": loaded.forward,
        "rows_per_forward": rows,
        "last_position_only": loaded.last_position_only,
    }
    for bs in (1, batch):
        call = rank_call(loaded, hists, bs, bodies[0]["k"], rows)
        warm = warm_until_stable(call)
        dt = time_calls(call, min_calls=repeats, min_seconds=0.0, start=warm["calls"])
        out[f"batch_{bs}"] = {"forward_ms": round(dt * 1000, 2), "req_per_s": round(bs / dt, 1), "warmup": warm}
    return out


def model_device(gpus: float) -> str:
    """ServeConfig.device for the replicas, the peer and the raw forward: "cuda" with `--gpus` > 0, else "cpu".

    Set explicitly, not "auto": with `--gpus 0` on a CUDA machine the replicas get no GPU,
    and the peer and raw forward (in processes Ray does not place) must not take one either.
    """
    return "cuda" if gpus else "cpu"


def device_name(gpus: float) -> str:
    """What the replicas, the peer and the raw forward run on: "cpu", or the GPU's name."""
    return f"cuda: {torch.cuda.get_device_name(0)}" if gpus else "cpu"
