"""Choosing and checking the tuned policy: the best trial, finalists re-run on a validation
period, and the comparison with greedy and epsilon = 0.1 (paired, on replay)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from lmrec.exploration.objectives import ReplayScenario, Scenario, evaluate, policy_config, replay_metrics
from lmrec.exploration.policies import PolicyConfig
from lmrec.tuning.exploration.config import METRIC


def pick_best(trials: list[dict[str, Any]], scenario: Scenario) -> dict[str, Any]:
    """Best objective among trials that saw every step (ASHA-stopped trials saw a prefix only)."""
    done = [t for t in trials if "metrics" in t]
    if not done:
        raise RuntimeError(f"no trial finished: {[t.get('error') for t in trials][:3]}")
    if isinstance(scenario, ReplayScenario):
        full = [t for t in done if t["metrics"].get("events", 0) >= len(scenario.tune)]
        done = full or done
    return max(done, key=lambda t: t["metrics"][METRIC])


DETERMINISTIC_POLICIES = ("greedy", "ucb")  # one replay run suffices: no seed changes their slates


def replay_runs(
    scenario: ReplayScenario,
    pc: PolicyConfig,
    period: str,
    penalty: float,
    repeats: int = 5,
    seed: int = 0,
) -> tuple[dict[str, Any], np.ndarray]:
    """Replay `pc` on `period` with seeds seed, seed+1, ... (once if deterministic), each from empty state.

    Returns the summary (estimate = mean clicks/event over seeds, `seed_std`, `per_seed`)
    and the per-event clicks averaged over seeds (for paired comparisons on the same events).
    """
    from lmrec.exploration.policies import build_policy
    from lmrec.exploration.replay import run_replay

    events = scenario.events(period)  # type: ignore[arg-type]
    n = 1 if pc.type in DETERMINISTIC_POLICIES else repeats
    runs = [run_replay(events, build_policy(pc.replace(seed=seed + r)), scenario.slate_size) for r in range(n)]
    vals = np.array([r.rewards.mean() for r in runs])
    first = replay_metrics(runs[0].summary(), penalty)
    out: dict[str, Any] = {
        **first,
        "estimate": float(vals.mean()),
        "seed_std": float(vals.std(ddof=1)) if n > 1 else 0.0,
        "repeats": float(n),
        "cum_reward": float(np.mean([r.rewards.sum() for r in runs])),
        "cum_regret": float(np.mean([(r.oracle - r.rewards).sum() for r in runs])),
        "per_seed": vals.tolist(),
        "seeds": [seed + r for r in range(n)],
    }
    out["objective"] = out["estimate"] - penalty * out["reward_se"]
    return out, np.mean([r.rewards for r in runs], axis=0)


def compare_policies(
    scenario: Scenario, best: PolicyConfig, penalty: float, repeats: int = 5, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Tuned vs greedy vs epsilon=0.1: on held-out events (replay) or on the logged data.

    On replay every policy also gets its paired difference to greedy on the same events:
    `diff_vs_greedy` (clicks/event), `diff_vs_greedy_se` (standard error over events of the
    per-event difference, seed-averaged) and `seeds_above_greedy` (how many seeds beat it).
    """
    base = scenario.base_policy
    candidates = {
        f"tuned ({policy_label(best)})": best,
        "greedy": policy_config({"policy": "greedy"}, base),
        "epsilon_greedy (epsilon=0.1)": policy_config({"policy": "epsilon_greedy", "epsilon": 0.1}, base),
    }
    out: dict[str, dict[str, Any]] = {}
    if isinstance(scenario, ReplayScenario):
        per_event: dict[str, np.ndarray] = {}
        for name, pc in candidates.items():
            out[name], per_event[name] = replay_runs(scenario, pc, "heldout", penalty, repeats, seed)
        g, g_val = per_event["greedy"], out["greedy"]["estimate"]
        for name, m in out.items():
            d = per_event[name] - g
            m["diff_vs_greedy"] = float(d.mean())
            m["diff_vs_greedy_se"] = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
            m["seeds_above_greedy"] = float(sum(v > g_val for v in m["per_seed"]))
        return out
    for name, pc in candidates.items():
        out[name] = evaluate(scenario, pc, penalty, seed=seed)
    return out


def select_on_validation(
    trials: list[dict[str, Any]],
    scenario: ReplayScenario,
    penalty: float,
    finalists: int = 5,
    repeats: int = 5,
    seed: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The search's top `finalists` distinct configurations, re-run on the validation period.

    Finalists are the trials that replayed every tune event (ASHA-stopped trials saw a
    prefix only), best search objective first, one per distinct policy configuration.
    Each is replayed on the validation events (`repeats` seeds if stochastic, from empty
    state); the one with the best validation objective is returned with every row.
    """
    done = [t for t in trials if "metrics" in t]
    full = [t for t in done if t["metrics"].get("events", 0) >= len(scenario.tune)] or done
    if not full:
        raise RuntimeError(f"no trial finished: {[t.get('error') for t in trials][:3]}")
    ranked = sorted(full, key=lambda t: -t["metrics"][METRIC])  # stable: the earlier trial wins a tie
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for t in ranked:
        pc = policy_config(t["params"], scenario.base_policy)
        key = json.dumps(pc.to_dict(), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        valid, _ = replay_runs(scenario, pc, "valid", penalty, repeats, seed)
        rows.append(
            {
                "params": t["params"],
                "policy": policy_label(pc),
                "search_objective": t["metrics"][METRIC],
                "search_estimate": t["metrics"].get("estimate"),
                "valid": valid,
                "trial": t,
            }
        )
        if len(rows) == finalists:
            break
    chosen = max(rows, key=lambda r: r["valid"]["objective"])  # first maximum: the better search rank wins a tie
    for r in rows:
        r["chosen"] = r is chosen
    return chosen["trial"], [{k: v for k, v in r.items() if k != "trial"} for r in rows]


def policy_label(pc: PolicyConfig) -> str:
    """A policy and its searched parameters, short: `ucb, c=0.3, w=20, lift`."""
    extra = {
        "epsilon_greedy": f"epsilon={pc.epsilon:.3g}",
        "softmax": f"temperature={pc.temperature:.3g}",
        "ucb": f"c={pc.ucb_c:.3g}, w={pc.prior_strength:.3g}, {pc.feedback}",
        "thompson": f"w={pc.prior_strength:.3g}, {pc.feedback}",
    }.get(pc.type, "")
    return f"{pc.type}{', ' + extra if extra else ''}"
