"""The compression benchmark's verdicts on the issue's targets, and its Markdown table."""

from __future__ import annotations

from typing import Any

from lmrec.compression.spec import CompressionSpec


def _only(spec: CompressionSpec, what: str) -> bool:
    """The variant applies only technique `what`, so its target can be judged on its own."""
    student, pruned, quant = spec.has_student, spec.prune != "none", spec.quantize != "none"
    return {
        "distill": student and spec.alpha > 0 and not pruned and not quant,  # alpha 0: trained, not distilled
        "int8": spec.quantize == "int8" and not student and not pruned,
        "structured50": spec.prune == "structured"
        and abs(spec.prune_amount - 0.5) < 1e-9
        and not student
        and not quant,
    }[what]


def check_targets(
    rows: list[dict[str, Any]], specs: dict[str, CompressionSpec], batch_sizes: list[int]
) -> list[dict[str, Any]]:
    """The issue's targets, one verdict per eligible variant."""
    teacher = rows[0]
    t_ndcg = teacher["test/full/ndcg@10"]
    verdicts = []
    for row in rows[1:]:
        spec = specs[row["variant"]]
        ndcg_ratio = row["test/full/ndcg@10"] / t_ndcg if t_ndcg > 0 else float("nan")
        speed = {bs: teacher[f"b{bs}/p50_ms"] / row[f"b{bs}/p50_ms"] for bs in batch_sizes}
        if _only(spec, "distill"):
            ok = row["params_ratio"] <= 0.25 and ndcg_ratio >= 0.95
            verdicts.append(
                {
                    "variant": spec.name,
                    "target": "distilled student <= 25% params keeps >= 95% NDCG@10",
                    "params_ratio": row["params_ratio"],
                    "ndcg_ratio": ndcg_ratio,
                    "met": bool(ok),
                }
            )
        if _only(spec, "int8"):
            ok = all(s >= 2.0 for s in speed.values()) and ndcg_ratio >= 0.98
            verdicts.append(
                {
                    "variant": spec.name,
                    "target": "int8: >= 2x lower CPU p50 latency at <= 2% NDCG@10 loss",
                    "speedup_p50": {f"b{bs}": s for bs, s in speed.items()},
                    "ndcg_ratio": ndcg_ratio,
                    "met": bool(ok),
                }
            )
        if _only(spec, "structured50"):
            ok = all(s > 1.0 for s in speed.values())
            verdicts.append(
                {
                    "variant": spec.name,
                    "target": "structured pruning at 50% gives a measured speed-up",
                    "speedup_p50": {f"b{bs}": s for bs, s in speed.items()},
                    "ndcg_ratio": ndcg_ratio,
                    "met": bool(ok),
                }
            )
    return verdicts


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of the rows and a list of target verdicts."""
    bss = result["config"]["latency"]["batch_sizes"]
    head = ["variant", "params", "params %", "MB on disk", "NDCG@10", "HR@10", "NDCG % of teacher"]
    for bs in bss:
        head += [f"b{bs} p50 ms", f"b{bs} p99 ms", f"b{bs} speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [
            r["variant"],
            f"{r['params']:,}",
            f"{100 * r['params_ratio']:.1f}",
            f"{r['bytes'] / 1e6:.2f}",
            f"{r['test/full/ndcg@10']:.4f}",
            f"{r['test/full/hr@10']:.4f}",
            f"{100 * r['ndcg_ratio']:.1f}",
        ]
        for bs in bss:
            cells += [f"{r[f'b{bs}/p50_ms']:.2f}", f"{r[f'b{bs}/p99_ms']:.2f}", f"{r[f'b{bs}/speedup_p50']:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for t in result["targets"]:
        detail = {
            k: (
                round(v, 3)
                if isinstance(v, float)
                else {a: round(b, 2) for a, b in v.items()}
                if isinstance(v, dict)
                else v
            )
            for k, v in t.items()
            if k not in ("variant", "target", "met")
        }
        lines.append(f"- {'MET' if t['met'] else 'MISSED'}: {t['target']} ({t['variant']}: {detail})")
    return "\n".join(lines)
