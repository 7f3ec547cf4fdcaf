"""The serving metrics (names, descriptions, boundaries, tag keys) and where they are recorded (Ray-free).

The app records them through `ray.util.metrics` (`lmrec.serving.app.RayMetrics`); docs/monitoring.md
and docs/grafana/lmrec_dashboard.json list them, and tests/unit/test_ops_docs.py reads `SERVE_METRICS`
to keep both true. Unit tests record into `InMemoryMetrics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

MS_BOUNDARIES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


@dataclass(frozen=True)
class Metric:
    """One application metric: a Counter adds, a Gauge sets, a Histogram observes the value recorded."""

    name: str
    kind: Literal["Counter", "Gauge", "Histogram"]
    description: str
    tag_keys: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()  # Histogram bucket edges


REQUEST_LATENCY_MS = Metric(
    "lmrec_serve_request_latency_ms", "Histogram", "end-to-end handler latency", ("endpoint", "status"), MS_BOUNDARIES
)
BATCH_SIZE = Metric(
    "lmrec_serve_batch_size", "Histogram", "requests per model forward", (), (1, 2, 4, 8, 16, 32, 64, 128, 256)
)
# Wall time of one batched forward, seen from the replica: the model's own cost plus any
# CPU or GIL contention inside the replica (docs/benchmarks.md, Serving).
FORWARD_MS = Metric(
    "lmrec_serve_forward_ms", "Histogram", "wall time of one batched model forward", ("replica",), MS_BOUNDARIES
)
CACHE_REQUESTS = Metric("lmrec_serve_cache_requests_total", "Counter", "ranked-candidate cache lookups", ("result",))
CACHE_HIT_RATIO = Metric("lmrec_serve_cache_hit_ratio", "Gauge", "cache hit ratio of this replica", ("replica",))
SLATES = Metric("lmrec_serve_slates_total", "Counter", "slates served", ("explored", "policy"))
EXPLORATION_RATE = Metric("lmrec_serve_exploration_rate", "Gauge", "fraction of slates that explored", ("replica",))
MODEL_VERSION = Metric(
    "lmrec_serve_model_version", "Gauge", "model version served by each replica", ("replica", "model")
)
CLICK_THROUGH_RATE = Metric("lmrec_serve_click_through_rate", "Gauge", "clicks / feedback events")
FEEDBACK = Metric("lmrec_serve_feedback_total", "Counter", "feedback events recorded", ("reward",))

SERVE_METRICS = (
    REQUEST_LATENCY_MS,
    BATCH_SIZE,
    FORWARD_MS,
    CACHE_REQUESTS,
    CACHE_HIT_RATIO,
    SLATES,
    EXPLORATION_RATE,
    MODEL_VERSION,
    CLICK_THROUGH_RATE,
    FEEDBACK,
)


class MetricsSink(Protocol):
    """Where the serving code records: `ray.util.metrics` in a replica, memory in unit tests."""

    def record(self, metric: Metric, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Add (Counter), set (Gauge) or observe (Histogram) `value` under `tags`."""


def _key(metric: Metric, tags: Mapping[str, str] | None) -> tuple[str, tuple[tuple[str, str], ...]]:
    tags = dict(tags or {})
    if set(tags) != set(metric.tag_keys):
        raise ValueError(f"{metric.name}: tags {sorted(tags)} are not its tag keys {list(metric.tag_keys)}")
    return metric.name, tuple(sorted(tags.items()))


class InMemoryMetrics:
    """Records in dictionaries keyed by (name, sorted tags); checks tags as Ray does."""

    def __init__(self) -> None:
        self.counters: dict[tuple, float] = {}
        self.gauges: dict[tuple, float] = {}
        self.histograms: dict[tuple, list[float]] = {}

    def record(self, metric: Metric, value: float, tags: Mapping[str, str] | None = None) -> None:
        key = _key(metric, tags)
        if metric.kind == "Counter":
            self.counters[key] = self.counters.get(key, 0.0) + value
        elif metric.kind == "Gauge":
            self.gauges[key] = value
        else:
            self.histograms.setdefault(key, []).append(value)

    def value(self, metric: Metric, **tags: str) -> float | list[float] | None:
        """A counter's sum, a gauge's last value or a histogram's observations (None: never recorded)."""
        key = _key(metric, tags)
        store = {"Counter": self.counters, "Gauge": self.gauges, "Histogram": self.histograms}[metric.kind]
        return store.get(key)
