"""RayMetrics records every serving metric through `ray.util.metrics` (no cluster needed to build and
record them), and Ray refuses tags that are not a metric's tag keys, as InMemoryMetrics does."""

from __future__ import annotations

import pytest

from lmrec.serving import metrics as m
from lmrec.serving.metrics import InMemoryMetrics
from lmrec.serving.replica import RayMetrics


def test_every_serving_metric_records_through_ray_util_metrics() -> None:
    from ray.util import metrics

    sink = RayMetrics()
    for metric in m.SERVE_METRICS:
        tags = {k: "x" for k in metric.tag_keys}
        sink.record(metric, 2.0, tags)
        sink.record(metric, 3.0, tags)  # the second record reuses the object
    made = {name: record.__self__ for name, record in sink._record.items()}
    assert {n: type(o).__name__ for n, o in made.items()} == {x.name: x.kind for x in m.SERVE_METRICS}
    assert all(isinstance(o, metrics.Metric) for o in made.values())
    assert made[m.FORWARD_MS.name].boundaries == list(m.FORWARD_MS.boundaries)


@pytest.mark.parametrize("sink", [RayMetrics(), InMemoryMetrics()], ids=["ray", "memory"])
def test_tags_must_be_the_metric_tag_keys(sink: RayMetrics | InMemoryMetrics) -> None:
    with pytest.raises(ValueError):
        sink.record(m.SLATES, 1, {"explored": "true"})  # "policy" missing
