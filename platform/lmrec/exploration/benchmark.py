"""The off-policy-evaluation benchmark on the Open Bandit sample, beside the published figures.

Two protocols, both estimating V(Bernoulli-TS) from the Random policy's 10,000
logged samples, with the BTS log's own click rate (0.0042) as the truth:

(i)  one estimate on the whole sample with a bootstrap CI (obp's quickstart,
     REFERENCE_NUMBERS.md 5c (i)); the evaluation policy's distribution comes from
     100,000 simulated rankings ("mc", the published protocol, our simulation) and
     from numerical integration ("exact", no simulation noise);
(ii) relative error averaged over 30 bootstrap resamples of the Random log, the
     reward model refitted on each (obp's examples/obd, REFERENCE_NUMBERS.md 5c (ii)).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from lmrec.exploration.estimators import ESTIMATORS, evaluate
from lmrec.exploration.open_bandit import (
    OBDLog, bts_action_dist, evaluate_bts_from_random, fit_obd_rewards, load_obd, ope_data,
)

TRUTH_SOURCE = "mean click of open_bandit/bts/all/all.csv (REFERENCE_NUMBERS.md 5a: 42 / 10,000)"
PUBLISHED_I: dict[str, dict[str, Any]] = {  # REFERENCE_NUMBERS.md 5c (i), obp 0.5.4 quickstart outputs
    "ips": {"value": 0.004553, "ci": [0.001531, 0.009254], "relative_error": 0.084019},
    "dm": {"value": 0.003545, "ci": [0.003501, 0.003589], "relative_error": 0.156041},
    "dr": {"value": 0.004727, "ci": [0.001702, 0.009416], "relative_error": 0.125548},
}
PUBLISHED_II: dict[str, dict[str, float]] = {  # REFERENCE_NUMBERS.md 5c (ii): mean (std) relative-EE over 30 runs
    "dm": {"mean": 0.156876, "std": 0.109898},
    "ips": {"mean": 0.311082, "std": 0.311170},
    "snips": {"mean": 0.311795, "std": 0.334736},
    "dr": {"mean": 0.292464, "std": 0.315485},
}


def protocol_i(data_dir: Optional[str] = None, n_sim: int = 100_000, seed: int = 12345, n_bootstrap: int = 10_000,
               n_folds: int = 3) -> dict[str, Any]:
    """Single-sample estimates with both evaluation-policy distributions."""
    out: dict[str, Any] = {}
    for method in ("mc", "exact"):
        t0 = time.time()
        bench = evaluate_bts_from_random(data_dir, "all", n_sim, seed, method, n_folds, "auto", n_bootstrap)
        out[method] = {
            "truth": bench.truth, "behavior_value": bench.behavior_value, "settings": bench.settings,
            "rows": bench.rows(), "seconds": round(time.time() - t0, 1),
        }
    return out


def protocol_ii(data_dir: Optional[str] = None, n_runs: int = 30, n_sim: int = 100_000, seed: int = 12345,
                n_folds: int = 3) -> dict[str, Any]:
    """Relative error over bootstrap resamples of the Random log (reward model refitted each time)."""
    t0 = time.time()
    log = load_obd(data_dir, "random", "all")
    truth = load_obd(data_dir, "bts", "all").on_policy_value
    dist = bts_action_dist("all", log.len_list, n_sim, seed)
    l2 = fit_obd_rewards(log, n_folds, "auto", seed, with_scores=False).fit.l2  # chosen once on the full log
    errors: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
    for run in range(n_runs):
        idx = np.random.default_rng([seed, run]).integers(0, log.n, log.n)
        boot = _take(log, idx)
        est = evaluate(ope_data(boot, dist, fit_obd_rewards(boot, n_folds, l2, seed + run, with_scores=False)), n_bootstrap=0)
        for name, e in est.items():
            errors[name].append(e.relative_error(truth))
    return {
        "truth": truth, "n_runs": n_runs, "l2": l2, "seconds": round(time.time() - t0, 1),
        "rows": {name: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "runs": v} for name, v in errors.items()},
    }


def _take(log: OBDLog, idx: np.ndarray) -> OBDLog:
    import dataclasses

    return dataclasses.replace(
        log, actions=log.actions[idx], positions=log.positions[idx], rewards=log.rewards[idx], pscore=log.pscore[idx],
        timestamps=log.timestamps[idx], user_codes=log.user_codes[idx], affinity=log.affinity[idx],
    )


def markdown_tables(result: dict[str, Any]) -> str:
    """The OPE tables as Markdown (what docs/benchmarks_exploration.md shows)."""
    lines = []
    pi = result["protocol_i"]
    truth = pi["mc"]["truth"]
    lines.append(f"V(BTS) on-policy (truth) = {truth:.4f}; V(Random) = {pi['mc']['behavior_value']:.4f}\n")
    lines.append("| estimator | ours, pi_e by simulation (100k) | 95% CI | rel. error | ours, pi_e exact | rel. error | published | published rel. error |")
    lines.append("|---|---|---|---|---|---|---|---|")
    exact = {r["estimator"]: r for r in pi["exact"]["rows"]}
    for r in pi["mc"]["rows"]:
        name = r["estimator"]
        pub = PUBLISHED_I.get(name)
        pub_v = f"{pub['value']:.6f}" if pub else "—"
        pub_e = f"{pub['relative_error']:.4f}" if pub else "—"
        lines.append(
            f"| {name.upper()} | {r['value']:.6f} | [{r['ci_low']:.6f}, {r['ci_high']:.6f}] | {r['relative_error']:.4f} "
            f"| {exact[name]['value']:.6f} | {exact[name]['relative_error']:.4f} | {pub_v} | {pub_e} |"
        )
    pii = result.get("protocol_ii")
    if pii:
        lines.append(f"\nRelative error over {pii['n_runs']} bootstrap resamples of the Random log, mean (std):\n")
        lines.append("| estimator | ours | published |")
        lines.append("|---|---|---|")
        for name, row in pii["rows"].items():
            pub = PUBLISHED_II.get(name)
            pub_s = f"{pub['mean']:.4f} ({pub['std']:.4f})" if pub else "—"
            lines.append(f"| {name.upper()} | {row['mean']:.4f} ({row['std']:.4f}) | {pub_s} |")
    return "\n".join(lines)


def replay_markdown(comparison: dict[str, dict[str, float]]) -> str:
    lines = ["| policy | clicks / event (held-out) | seed std | cum. clicks | cum. regret | runs |", "|---|---|---|---|---|---|"]
    for name, m in comparison.items():
        lines.append(f"| {name} | {m['estimate']:.4f} | {m.get('seed_std', 0.0):.4f} | {m['cum_reward']:.1f} | {m['cum_regret']:.1f} | {int(m.get('repeats', 1))} |")
    return "\n".join(lines)


def write_json(data: Any, path: str | Path) -> Path:
    import json

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(p)
    return p
