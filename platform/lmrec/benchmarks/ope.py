"""The off-policy-evaluation benchmark on the Open Bandit sample, beside the published figures.

Two protocols, both estimating V(Bernoulli-TS) from the Random policy's 10,000
logged samples, with the BTS log's own click rate (0.0042) as the truth:

(i)  one estimate on the whole sample with a bootstrap CI (obp's quickstart,
     REFERENCE_NUMBERS.md 5c (i)); the evaluation policy's distribution comes from
     100,000 simulated rankings ("mc", the published protocol: our simulation of the
     evaluation policy's own random stream, equal to obp's), from numerical integration
     ("exact", no simulation noise) and, where it differs from "mc", from a stored
     distribution ("obp"); the reward model is ours ("lmrec") or the published
     configuration refitted with our code ("obp_quickstart"), and the published one
     again with scikit-learn's solver stopped at several tolerances, and re-executed
     under other scikit-learn releases in their own interpreters;
(ii) relative error averaged over 30 bootstrap resamples of the Random log, the
     reward model refitted on each (obp's examples/obd, REFERENCE_NUMBERS.md 5c (ii)).

The solver checks need scikit-learn, from the `[bench]` extra (`pip install 'lmrec[bench]'`);
without it they are left out of the results.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.benchmarks.obd_bts import bts_action_dist, ope_data
from lmrec.benchmarks.ope_report import markdown_tables, replay_markdown
from lmrec.benchmarks.ope_solvers import SKLEARN_ERAS, published_pipeline_reruns, rerun_pythons, solver_sensitivity
from lmrec.benchmarks.output import write_json
from lmrec.config import load_config
from lmrec.data.open_bandit import OBDLog, load_obd
from lmrec.exploration.artifacts import load_policy_config
from lmrec.exploration.estimators import ESTIMATORS, evaluate
from lmrec.exploration.open_bandit import fit_obd_rewards

REWARD_MODELS_I = ("lmrec", "obp_quickstart")


def load_action_dist(path: str | Path | None) -> np.ndarray | None:
    """A stored action distribution (JSON with "action_dist", e.g. obp's in tests/data); None for '' or a missing file."""
    import json

    if not path or not Path(path).is_file():
        return None
    return np.asarray(json.loads(Path(path).read_text())["action_dist"], dtype=np.float64)


def protocol_i(
    data_dir: str | None = None,
    n_sim: int = 100_000,
    seed: int = 12345,
    n_bootstrap: int = 10_000,
    n_folds: int = 3,
    reward_models: tuple[str, ...] = REWARD_MODELS_I,
    reference_dist: np.ndarray | None = None,
) -> dict[str, Any]:
    """Single-sample estimates for each evaluation-policy distribution and reward model.

    Distributions: "mc" (our 100,000-draw simulation, seed 12345: the published protocol),
    "exact" (numerical integration) and, when given, "obp" (obp's own simulated
    distribution, e.g. the one stored in tests/data). Reward models: "lmrec" (ours, L2
    chosen by out-of-fold log-loss on the log) and "obp_quickstart" (the published
    configuration, refitted with our solver). Each run also carries the DR - IPS
    decomposition (`dr_ips_decomposition`).
    """
    from lmrec.exploration.estimators import dr_ips_decomposition

    log = load_obd(data_dir, "random", "all")
    truth = load_obd(data_dir, "bts", "all").on_policy_value
    dists = {
        "mc": bts_action_dist("all", log.len_list, n_sim, seed, "mc"),
        "exact": bts_action_dist("all", log.len_list, method="exact"),
    }
    out: dict[str, Any] = {"truth": truth, "behavior_value": log.on_policy_value, "runs": {}}
    if reference_dist is not None:
        ref = np.asarray(reference_dist, dtype=np.float64)
        out["mc_equals_reference"] = bool(np.array_equal(ref, dists["mc"]))
        if not out["mc_equals_reference"]:  # identical arrays would only repeat the "mc" rows
            dists["obp"] = ref
    for rm in reward_models:
        t0 = time.time()
        rewards = fit_obd_rewards(log, n_folds, "auto", seed, with_scores=False, reward_model=rm)  # type: ignore[arg-type]
        fit_s = time.time() - t0
        for method, dist in dists.items():
            t1 = time.time()
            data = ope_data(log, dist, rewards)
            est = evaluate(data, n_bootstrap=n_bootstrap, seed=seed)
            rows = [
                {
                    **e.to_dict(),
                    "relative_error": e.relative_error(truth),
                    "relative_to_behavior": e.value / log.on_policy_value,
                }
                for e in est.values()
            ]
            out["runs"][f"{method}/{rm}"] = {
                "dist": method,
                "reward_model": rm,
                "l2": rewards.fit.l2,
                "reward_model_oof_log_loss": rewards.fit.oof_log_loss,
                "rows": rows,
                "decomposition": dr_ips_decomposition(data),
                "seconds": round(fit_s + time.time() - t1, 1),
            }
    return out


def simulation_spread(
    data_dir: str | None = None,
    seeds: int = 10,
    n_sim: int = 100_000,
    n_folds: int = 3,
    fit_seed: int = 12345,
    reward_models: tuple[str, ...] = REWARD_MODELS_I,
) -> dict[str, Any]:
    """Relative errors of IPS and DR when only the simulation seed of pi_e changes (0 .. seeds - 1).

    Shows how much of a gap to a published figure is Monte Carlo noise in pi_e; the
    protocol itself fixes the seed (12345), so nothing here is chosen.
    """
    from lmrec.exploration.estimators import dr_ips_decomposition

    log = load_obd(data_dir, "random", "all")
    truth = load_obd(data_dir, "bts", "all").on_policy_value
    fits = {
        rm: fit_obd_rewards(log, n_folds, "auto", fit_seed, with_scores=False, reward_model=rm) for rm in reward_models
    }  # type: ignore[arg-type]
    errors: dict[str, list[float]] = {"ips": [], **{f"dr/{rm}": [] for rm in reward_models}}
    for seed in range(seeds):
        dist = bts_action_dist("all", log.len_list, n_sim, seed, "mc")
        for i, (rm, fit) in enumerate(fits.items()):
            d = dr_ips_decomposition(ope_data(log, dist, fit))
            errors[f"dr/{rm}"].append(abs(d["dr"] - truth) / truth)
            if i == 0:
                errors["ips"].append(abs(d["ips"] - truth) / truth)
    summary = {
        k: {
            "mean": float(np.mean(v)),
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "min": float(np.min(v)),
            "max": float(np.max(v)),
            "runs": v,
        }
        for k, v in errors.items()
    }
    return {"seeds": list(range(seeds)), "n_sim": n_sim, "relative_errors": summary}


def protocol_ii(
    data_dir: str | None = None, n_runs: int = 30, n_sim: int = 100_000, seed: int = 12345, n_folds: int = 3
) -> dict[str, Any]:
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
        est = evaluate(
            ope_data(boot, dist, fit_obd_rewards(boot, n_folds, l2, seed + run, with_scores=False)), n_bootstrap=0
        )
        for name, e in est.items():
            errors[name].append(e.relative_error(truth))
    return {
        "truth": truth,
        "n_runs": n_runs,
        "l2": l2,
        "seconds": round(time.time() - t0, 1),
        "rows": {
            name: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "runs": v} for name, v in errors.items()
        },
    }


def _take(log: OBDLog, idx: np.ndarray) -> OBDLog:
    import dataclasses

    return dataclasses.replace(
        log,
        actions=log.actions[idx],
        positions=log.positions[idx],
        rewards=log.rewards[idx],
        pscore=log.pscore[idx],
        timestamps=log.timestamps[idx],
        user_codes=log.user_codes[idx],
        affinity=log.affinity[idx],
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Benchmark off-policy estimators on the Open Bandit sample and the tuned policy on held-out replay."
    )
    p.add_argument("--out", default="out/benchmark_ope.json")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n-bootstrap", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=30, help="bootstrap runs of protocol (ii); 0 skips it")
    p.add_argument(
        "--sim-seeds",
        type=int,
        default=10,
        help="protocol (i) relative errors over this many pi_e simulation seeds; 0 skips it",
    )
    p.add_argument("--skip-obd", action="store_true")
    p.add_argument("--skip-replay", action="store_true")
    p.add_argument("--replay-config", default="jobs/configs/tune_exploration/ml100k_replay.yaml")
    p.add_argument("--tuned-policy", default="out/tune_exploration_ml100k_replay_policy.json")
    p.add_argument("--repeats", type=int, default=5, help="seeds per stochastic policy on held-out replay")
    p.add_argument(
        "--reference-dist",
        default="tests/data/obd_bts_action_dist_obp.json",
        help="obp's BTS action distribution (JSON with 'action_dist'), an extra pi_e for protocol (i); '' skips it",
    )
    p.add_argument(
        "--sklearn-env",
        action="append",
        default=[],
        metavar="SPEC",
        help="pip requirements of one install (repeatable)",
    )
    p.add_argument("--sklearn-eras", action="store_true", help="add the installs in SKLEARN_ERAS (obp 0.5's time)")
    p.add_argument("--envs-dir", default="out/sklearn_envs")
    args = p.parse_args(argv)
    pythons = (
        []
        if args.skip_obd
        else rerun_pythons(args.sklearn_env + list(SKLEARN_ERAS if args.sklearn_eras else ()), args.envs_dir)
    )
    replay_cfg = None
    if not args.skip_replay:  # fail on a bad config or policy reference before the long OBD part
        from lmrec.tuning.exploration import TuneExplorationConfig, replay_benchmark

        replay_cfg = load_config(TuneExplorationConfig, args.replay_config)
        tuned = load_policy_config(args.tuned_policy)
    result: dict = {}
    if not args.skip_obd:
        ref = load_action_dist(args.reference_dist)
        result["protocol_i"] = protocol_i(args.data_dir, n_bootstrap=args.n_bootstrap, reference_dist=ref)
        result["solver_sensitivity"] = solver_sensitivity(args.data_dir)
        if pythons:
            result["published_pipeline_reruns"] = published_pipeline_reruns(pythons, args.data_dir)
        if args.sim_seeds:
            result["simulation_spread"] = simulation_spread(args.data_dir, seeds=args.sim_seeds)
        if args.runs:
            result["protocol_ii"] = protocol_ii(args.data_dir, n_runs=args.runs)
        print(markdown_tables(result), flush=True)
    if replay_cfg is not None:
        result["replay"] = replay_benchmark(replay_cfg, tuned, args.repeats)
        print("\nHeld-out replay (" + args.replay_config + "):\n" + replay_markdown(result["replay"]["comparison"]))
    print(f"\nwrote {write_json(result, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
