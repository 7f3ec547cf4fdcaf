"""The serving benchmark's model and requests, and the ceiling it is held to: the model forward alone.

A randomly initialised model over a real catalog (latency does not depend on weights),
explicit-history request bodies from real user prefixes, and `raw_ceiling`: requests/s of
`LoadedModel.rank` with no HTTP and no Serve, on the device the replicas use.
"""

from __future__ import annotations

import time
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
    """Requests/s of the model forward alone (no HTTP, no Serve) at batch `batch` and 1."""
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
    rows = cfg.batch.forward_rows(loaded.device.type)
    hists = [loaded.to_idx(b["history"]) for b in bodies]
    k = bodies[0]["k"]
    out: dict[str, Any] = {
        "device": loaded.device.type,
        "forward": loaded.forward,
        "rows_per_forward": rows,
        "last_position_only": loaded.last_position_only,
    }
    for bs in (1, batch):
        loaded.rank(hists[:bs], k, [True] * bs, rows)  # warm-up
        t0 = time.perf_counter()
        for r in range(repeats):
            chunk = [hists[(r * bs + i) % len(hists)] for i in range(bs)]
            loaded.rank(chunk, k, [True] * bs, rows)
        dt = (time.perf_counter() - t0) / repeats
        out[f"batch_{bs}"] = {"forward_ms": round(dt * 1000, 2), "req_per_s": round(bs / dt, 1)}
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
