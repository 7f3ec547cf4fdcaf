"""What a search reports: its result (with the comparison table), the validation table and
the held-out replay curves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.exploration.objectives import ReplayScenario
from lmrec.exploration.policies import PolicyConfig


@dataclass
class SearchResult:
    """What a search produced: best config, every trial, the comparison and where it is tracked."""

    parent_run_id: str
    best: PolicyConfig
    best_metrics: dict[str, float]
    trials: list[dict[str, Any]]
    comparison: dict[str, dict[str, float]]
    scenario_info: dict[str, Any]
    model_version: str | None
    policy_uri: str
    seconds: float
    files: dict[str, str] = field(default_factory=dict)
    selection: list[dict[str, Any]] = field(default_factory=list)  # finalists on the validation period (if any)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent_run_id": self.parent_run_id,
            "best": self.best.to_dict(),
            "best_metrics": self.best_metrics,
            "trials": self.trials,
            "comparison": self.comparison,
            "scenario": self.scenario_info,
            "model_version": self.model_version,
            "policy_uri": self.policy_uri,
            "seconds": round(self.seconds, 1),
            "files": self.files,
            "selection": self.selection,
        }

    def table(self) -> str:
        """Comparison of the tuned policy with the baselines, as plain text."""
        lines = [f"{'policy':<36} {'estimate':>10} {'std_err':>9} {'objective':>10}"]
        for name, m in self.comparison.items():
            lines.append(
                f"{name:<36} {m.get('estimate', float('nan')):>10.5f} {m.get('std_err', m.get('reward_se', float('nan'))):>9.5f} {m.get('objective', float('nan')):>10.5f}"
            )
        return "\n".join(lines)


def selection_table(selection: list[dict[str, Any]]) -> str:
    """The validation stage as plain text: search objective, validation mean and seed std per finalist."""
    lines = [f"{'finalist':<44} {'search obj':>10} {'valid':>8} {'seed std':>8} {'valid obj':>9}"]
    for r in selection:
        v = r["valid"]
        lines.append(
            f"{('* ' if r['chosen'] else '  ') + r['policy']:<44} {r['search_objective']:>10.4f} "
            f"{v['estimate']:>8.4f} {v['seed_std']:>8.4f} {v['objective']:>9.4f}"
        )
    return "\n".join(lines)


def replay_curves_png(
    scenario: ReplayScenario, configs: dict[str, PolicyConfig], path: Path, logger: Any = None
) -> Path:
    """Held-out cumulative clicks and regret of each policy as a PNG; with `logger` (a RunLogger)
    also as metric histories `heldout/<name>/cum_reward|cum_regret`, a point every `report_every` events."""
    from lmrec.exploration.policies import build_policy
    from lmrec.exploration.replay import plot_curves, run_replay

    results = {
        name: run_replay(scenario.heldout, build_policy(pc), scenario.slate_size) for name, pc in configs.items()
    }
    if logger is not None and results:
        n = len(next(iter(results.values())).rewards)
        steps = sorted({*range(scenario.report_every, n + 1, scenario.report_every), n})
        idx = np.asarray(steps) - 1
        series: dict[str, list[float]] = {}
        for name, res in results.items():
            key = name.replace("=", "_")
            series[f"heldout/{key}/cum_reward"] = res.cum_reward[idx].tolist()
            series[f"heldout/{key}/cum_regret"] = res.cum_regret[idx].tolist()
        logger.history(series, steps)
    return plot_curves(results, path, title="held-out replay")
