"""After the compression search: trial rows, the Pareto front, its table and its plot."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmrec.tuning.compression.config import NDCG_KEY, SIZE_KEY
from lmrec.tuning.search import trial_records


def pareto_front(rows: list[dict[str, Any]], keys: list[str], modes: list[str]) -> list[int]:
    """Indices of rows no other row dominates (at least as good everywhere, better somewhere)."""

    def better_eq(a: dict[str, Any], b: dict[str, Any]) -> tuple[bool, bool]:
        ge, gt = True, False
        for k, m in zip(keys, modes):
            x, y = (a[k], b[k]) if m == "max" else (-a[k], -b[k])
            ge &= x >= y
            gt |= x > y
        return ge, gt

    front = []
    for i, r in enumerate(rows):
        dominated = False
        for j, o in enumerate(rows):
            if i != j:
                ge, gt = better_eq(o, r)
                if ge and gt:
                    dominated = True
                    break
        if not dominated:
            front.append(i)
    return front


def front_png(rows: list[dict[str, Any]], front: list[int], latency_metric: str, path: Path) -> Path:
    """NDCG@10 vs p50 latency, marker area proportional to bytes; front points joined and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    biggest = max(r[SIZE_KEY] for r in rows) or 1.0
    size = [30 + 600 * r[SIZE_KEY] / biggest for r in rows]
    ax.scatter(
        [r[latency_metric] for r in rows],
        [r[NDCG_KEY] for r in rows],
        s=size,
        alpha=0.35,
        color="tab:gray",
        label="trials (area ~ bytes)",
    )
    pts = sorted((rows[i][latency_metric], rows[i][NDCG_KEY], i) for i in front)
    ax.scatter(
        [p[0] for p in pts],
        [p[1] for p in pts],
        s=[size[p[2]] for p in pts],
        alpha=0.8,
        color="tab:orange",
        label="Pareto front",
    )
    for x, y, i in pts:
        ax.annotate(rows[i]["label"], (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(f"{latency_metric} (CPU)")
    ax.set_ylabel("validation NDCG@10 (full ranking)")
    ax.set_title("lmrec compression search")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def variant_label(spec: dict[str, Any]) -> str:
    """A compressed variant, short: `student 2x64, int8` or `structured 0.50 +ft20`."""
    parts = []
    if spec.get("student_hidden"):
        parts.append(f"student {spec['student_layers']}x{spec['student_hidden']}")
    if spec.get("prune", "none") != "none":
        parts.append(
            f"{spec['prune']} {spec['prune_amount']:.2f}"
            + (f" +ft{spec['finetune_steps']}" if spec.get("finetune_steps") else "")
        )
    if spec.get("quantize", "none") != "none":
        parts.append(spec["quantize"])
    return ", ".join(parts) or "teacher"


def front_table(rows: list[dict[str, Any]], front: list[int], keys: list[str]) -> str:
    """The front's rows as a Markdown table (objectives, test NDCG@10, parameters)."""
    head = ["trial", "variant", *keys, "test NDCG@10", "params"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i in front:
        r = rows[i]
        cells = [
            r["trial_id"],
            r["label"],
            *[f"{r[k]:.4g}" for k in keys],
            f"{r.get('test/full/ndcg_at_10', float('nan')):.4f}",
            f"{int(r.get('num_parameters', 0)):,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class CompressionSearchResult:
    """What a compression search produced: every trial, the front (with versions), the failures."""

    parent_run_id: str
    trials: list[dict[str, Any]]  # every trial: status, params, final metrics
    front: list[dict[str, Any]]  # finished trials on the Pareto front, with registered versions
    failed: list[dict[str, Any]]
    seconds: float
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def trial_rows(grid: Any, keys: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(finished and stopped trials, failed trials) of a ResultGrid; a finished row carries its
    variant folder, spec, label and numeric metrics, a stopped one the objectives it reported."""
    done, failed = [], []
    for t in trial_records(grid):
        base = {"trial_id": t.trial_id, "params": t.params, "path": t.path}
        if t.error is not None:
            failed.append({**base, "error": t.error})
            continue
        m = t.metrics
        if not m.get("final_variant"):
            done.append({**base, "status": "stopped", **{k: m.get(k) for k in keys if k in m}})
            continue
        spec = json.loads(m["spec"])
        row = {
            **base,
            "status": "finished",
            "variant_dir": m["variant_dir"],
            "spec": spec,
            "label": variant_label(spec),
        }
        row.update(t.numbers())
        done.append(row)
    return done, failed
