"""CPU inference latency, parameter count and size of a model: what serving pays per request.

The timed call is the serving computation: full-length histories in, last-position
scores over the whole catalog out (`model(input_ids)`), under `torch.inference_mode`.
Models are timed *interleaved* (a few calls of each in turn, for several rounds), so
background load on a shared machine hits every model alike instead of whichever
happened to run during a busy spell.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field
from torch import nn

from lmrec.config import ConfigModel, check


class LatencyConfig(ConfigModel):
    """Batch sizes, history length and repetitions of the latency measurement."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 64])
    seq_len: int | None = None  # None = each model's max_seq_len
    iters: int = 100  # timed calls per model and batch size (p99 needs >= 100)
    warmup: int = 5
    rounds: int = 5  # interleaving rounds; iters are split evenly over them
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    max_seconds: float = 60.0  # per model and batch size: stop early (fewer iters) past this
    seed: int = 0

    def validate_config(self) -> None:
        check(
            len(self.batch_sizes) > 0 and all(b >= 1 for b in self.batch_sizes), "batch_sizes", "must be positive ints"
        )
        check(self.seq_len is None or self.seq_len >= 1, "seq_len", "must be >= 1 or null")
        check(self.iters >= 1, "iters", "must be >= 1")
        check(self.warmup >= 0, "warmup", "must be >= 0")
        check(1 <= self.rounds <= self.iters, "rounds", "must be in [1, iters]")
        check(self.threads >= 0, "threads", "must be >= 0")
        check(self.max_seconds > 0, "max_seconds", "must be > 0")


def latency_inputs(num_items: int, batch_size: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """(batch_size, seq_len) random item ids, no padding (the longest histories, the worst case)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, num_items + 1, (batch_size, seq_len), generator=g)


def _summary(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": float(len(ms)),
    }


def measure_latencies(models: dict[str, nn.Module], cfg: LatencyConfig | None = None) -> dict[str, dict[str, float]]:
    """{name: {"b1/p50_ms": ..., "b1/p99_ms": ..., "b64/p50_ms": ..., ...}} for each model, on CPU."""
    cfg = cfg or LatencyConfig()
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out: dict[str, dict[str, float]] = {name: {} for name in models}
    try:
        for bs in cfg.batch_sizes:
            inputs = {}
            for name, model in models.items():
                model.eval()
                mc = model.config
                inputs[name] = latency_inputs(mc.num_items, bs, cfg.seq_len or mc.max_seq_len, cfg.seed)
            samples: dict[str, list[float]] = {name: [] for name in models}
            spent = {name: 0.0 for name in models}
            per_round = max(1, cfg.iters // cfg.rounds)
            with torch.inference_mode():
                for name, model in models.items():
                    for _ in range(cfg.warmup):
                        model(inputs[name])
                for _ in range(cfg.rounds):
                    for name, model in models.items():
                        for _ in range(per_round):
                            if spent[name] > cfg.max_seconds:
                                break
                            t0 = time.perf_counter()
                            model(inputs[name])
                            dt = time.perf_counter() - t0
                            samples[name].append(dt)
                            spent[name] += dt
            for name in models:
                for key, value in _summary(samples[name]).items():
                    out[name][f"b{bs}/{key}"] = value
        for name in models:
            out[name]["threads"] = float(torch.get_num_threads())
    finally:
        torch.set_num_threads(old_threads)
    return out


def measure_latency(model: nn.Module, cfg: LatencyConfig | None = None) -> dict[str, float]:
    """Latency summary of one model (see `measure_latencies`)."""
    return measure_latencies({"model": model}, cfg)["model"]


def load_average() -> float | None:
    """1-minute load average (None where the OS has none): recorded next to latencies."""
    try:
        import os

        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None
