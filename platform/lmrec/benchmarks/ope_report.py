"""The OPE benchmark's Markdown tables, beside the published figures they are compared with."""

from __future__ import annotations

from typing import Any

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


def markdown_tables(result: dict[str, Any]) -> str:
    """The OPE tables as Markdown (what docs/benchmarks/exploration.md shows)."""
    lines = []
    pi = result["protocol_i"]
    truth = pi["truth"]
    lines.append(f"V(BTS) on-policy (truth) = {truth:.4f}; V(Random) = {pi['behavior_value']:.4f}\n")
    lines.append(
        "| reward model | pi_e | estimator | estimate | 95% CI | rel. error | published | published rel. error |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for _key, run in pi["runs"].items():
        for r in run["rows"]:
            name = r["estimator"]
            pub = PUBLISHED_I.get(name)
            pub_v = f"{pub['value']:.6f}" if pub else "—"
            pub_e = f"{pub['relative_error']:.6f}" if pub else "—"
            lines.append(
                f"| {run['reward_model']} (L2 {run['l2']:g}) | {run['dist']} | {name.upper()} | {r['value']:.6f} "
                f"| [{r['ci_low']:.6f}, {r['ci_high']:.6f}] | {r['relative_error']:.7f} | {pub_v} | {pub_e} |"
            )
    lines.append("\nDR - IPS = (DM - mean q_logged) + mean q_logged * (1 - mean w) - cov(w, q_logged):\n")
    lines.append(
        "| reward model | pi_e | mean w | mean q_logged | DM - mean q | mean q (1 - mean w) | -cov(w, q) | DR - IPS |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for _key, run in pi["runs"].items():
        d = run["decomposition"]
        lines.append(
            f"| {run['reward_model']} | {run['dist']} | {d['mean_weight']:.4f} | {d['mean_q_logged']:.6f} | {d['term_dm_vs_logged']:+.7f} "
            f"| {d['term_weight_mean']:+.7f} | {d['term_cov']:+.7f} | {d['dr_minus_ips']:+.7f} |"
        )
    if pi.get("mc_equals_reference"):
        lines.append(
            "\npi_e 'mc' is identical to obp's stored BernoulliTS distribution (same stream, every entry equal)."
        )
    sens = result.get("solver_sensitivity")
    if sens:
        lines.append("\nPublished reward-model configuration, only the solver's stopping rule changed (pi_e: mc):\n")
        lines.append("| solver | DM | DM rel. error | DR | DR rel. error |")
        lines.append("|---|---|---|---|---|")
        for r in sens["runs"]:
            lines.append(
                f"| {r['solver']} | {r['dm_value']:.8f} | {r['dm_relative_error']:.7f} | {r['dr_value']:.8f} "
                f"| {r['dr_relative_error']:.7f} |"
            )
        lines.append(
            f"| published (obp 0.5.4 quickstart) | {PUBLISHED_I['dm']['value']:.6f} | {PUBLISHED_I['dm']['relative_error']:.6f} "
            f"| {PUBLISHED_I['dr']['value']:.6f} | {PUBLISHED_I['dr']['relative_error']:.6f} |"
        )
    reruns = result.get("published_pipeline_reruns")
    if reruns:
        lines.append(
            "\nThe published pipeline (" + reruns["base_model"] + ", default tol) under other installs (pi_e: mc):\n"
        )
        lines.append("| scikit-learn | SciPy | NumPy | DM | DM rel. error | DR | DR rel. error |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in reruns["runs"]:
            v = r["versions"]
            lines.append(
                f"| {v['scikit-learn']} | {v['scipy']} | {v['numpy']} | {r['dm_value']:.8f} | {r['dm_relative_error']:.7f} "
                f"| {r['dr_value']:.8f} | {r['dr_relative_error']:.7f} |"
            )
        lines.append(
            f"| published (obp 0.5.4 quickstart) | — | — | {PUBLISHED_I['dm']['value']:.6f} | {PUBLISHED_I['dm']['relative_error']:.6f} "
            f"| {PUBLISHED_I['dr']['value']:.6f} | {PUBLISHED_I['dr']['relative_error']:.6f} |"
        )
    spread = result.get("simulation_spread")
    if spread:
        lines.append(
            f"\nRelative error over simulation seeds {spread['seeds'][0]}-{spread['seeds'][-1]} of pi_e, mean ± std (range):\n"
        )
        lines.append("| estimator | mean ± std | range | at or below published |")
        lines.append("|---|---|---|---|")
        for name, row in spread["relative_errors"].items():
            pub = PUBLISHED_I.get(name.split("/")[0])
            below = f"{sum(v <= pub['relative_error'] for v in row['runs'])} of {len(row['runs'])}" if pub else "—"
            lines.append(
                f"| {name} | {row['mean']:.4f} ± {row['std']:.4f} | {row['min']:.4f}–{row['max']:.4f} | {below} |"
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


def replay_markdown(comparison: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| policy | clicks / event (held-out) | seed std | runs | cum. clicks | cum. regret | minus greedy (paired SE) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in comparison.items():
        diff = f"{m['diff_vs_greedy']:+.4f} ({m['diff_vs_greedy_se']:.4f})" if "diff_vs_greedy" in m else "—"
        lines.append(
            f"| {name} | {m['estimate']:.4f} | {m.get('seed_std', 0.0):.4f} | {int(m.get('repeats', 1))} "
            f"| {m['cum_reward']:.1f} | {m['cum_regret']:.1f} | {diff} |"
        )
    return "\n".join(lines)
