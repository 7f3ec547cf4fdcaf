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
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.config import load_config
from lmrec.data.open_bandit import OBDLog, load_obd
from lmrec.exploration.artifacts import load_policy_config
from lmrec.exploration.estimators import ESTIMATORS, evaluate
from lmrec.exploration.open_bandit import bts_action_dist, fit_obd_rewards, ope_data

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


SOLVER_TOLS = (1e-4, 1e-6, 1e-8, 1e-10)


def solver_sensitivity(
    data_dir: str | None = None, tols: tuple[float, ...] = SOLVER_TOLS, seed: int = 12345, n_folds: int = 3
) -> dict[str, Any]:
    """DM and DR of the published reward-model configuration when only the solver's stopping rule changes.

    The objective is fixed (L2 logistic regression, C = 1, per position, the published
    folds); our Newton solver runs to its optimum, scikit-learn's lbfgs (the solver behind
    the published figures) stops at `tol`. pi_e is the published protocol's. Needs
    scikit-learn (a dev dependency); returns {} without it.
    """
    try:
        from sklearn.linear_model import LogisticRegression as SkLogistic
    except ImportError:
        return {}
    from lmrec.exploration.open_bandit import fit_obd_rewards_obp_quickstart

    log = load_obd(data_dir, "random", "all")
    truth = load_obd(data_dir, "bts", "all").on_policy_value
    dist = bts_action_dist("all", log.len_list, seed=seed)

    def lbfgs(tol: float) -> Any:
        def fit(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
            m = SkLogistic(C=1.0, tol=tol, max_iter=100_000).fit(X, y)
            return m.coef_[0], float(m.intercept_[0])

        return fit

    runs = []
    for name, solver in [("lmrec Newton (optimum)", None)] + [
        (f"scikit-learn lbfgs, tol {t:g}", lbfgs(t)) for t in tols
    ]:
        rewards = fit_obd_rewards_obp_quickstart(log, n_folds, 1.0, seed, with_scores=False, solver=solver)
        est = evaluate(ope_data(log, dist, rewards), ("dm", "dr"), n_bootstrap=0)
        runs.append(
            {
                "solver": name,
                **{f"{k}_value": e.value for k, e in est.items()},
                **{f"{k}_relative_error": e.relative_error(truth) for k, e in est.items()},
            }
        )
    return {"truth": truth, "runs": runs}


SKLEARN_ERAS = (  # scikit-learn releases from obp 0.5's time (the objective was an unscaled sum before 1.4), with
    # the SciPy / NumPy they shipped with; all have Python 3.11 wheels
    "scikit-learn==1.1.3 scipy==1.10.1 numpy==1.24.4",
    "scikit-learn==1.3.2 scipy==1.11.4 numpy==1.26.4",
)


def make_python_env(spec: str, root: str | Path) -> Path:
    """A virtualenv under `root` holding `spec` (pip requirement strings), built once and reused; its python.

    Needs the package index (or a local mirror pip is configured for). A failed install
    raises RuntimeError with pip's last lines and leaves no half-built env to reuse.
    """
    import hashlib
    import shutil
    import subprocess
    import sys

    env = Path(root) / ("env-" + hashlib.sha1(spec.encode()).hexdigest()[:10])
    python = env / "bin" / "python"
    if (env / ".complete").is_file():
        return python
    shutil.rmtree(env, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", *spec.split()], capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(env, ignore_errors=True)
        raise RuntimeError(
            f"pip install {spec!r} failed: " + "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        )
    (env / ".complete").write_text(spec + "\n")
    return python


def rerun_pythons(specs: list[str], root: str | Path) -> list[str | Path]:
    """This interpreter plus one virtualenv per spec (`make_python_env`); [] when no spec is given."""
    import sys

    return [sys.executable, *(make_python_env(spec, root) for spec in specs)] if specs else []


def published_pipeline_reruns(
    pythons: list[str | Path], data_dir: str | None = None, seed: int = 12345, n_folds: int = 3
) -> dict[str, Any]:
    """DM and DR of the published pipeline re-executed under other scikit-learn/SciPy/NumPy installs.

    The published figures came from obp 0.5.4's quickstart: `LogisticRegression(max_iter=1000)`
    at scikit-learn's default tol, one per position, fitted on the published folds. Here the
    exact fitting problems (features, labels, folds: ours, checked against obp) are written
    once; each interpreter in `pythons` fits them with its own scikit-learn
    (`sklearn_refit.py`), and DM/DR are computed from its coefficients with our estimators
    and the published pi_e. The spread across installs is how far the published protocol
    itself reproduces; nothing here is chosen.
    """
    import json
    import subprocess
    import tempfile

    from lmrec.exploration.open_bandit import fit_obd_rewards_obp_quickstart

    log = load_obd(data_dir, "random", "all")
    truth = load_obd(data_dir, "bts", "all").on_policy_value
    dist = bts_action_dist("all", log.len_list, seed=seed)
    problems: list[tuple[np.ndarray, np.ndarray]] = []

    def record(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        problems.append((X, y))
        return np.zeros(X.shape[1]), 0.0

    fit_obd_rewards_obp_quickstart(log, n_folds, 1.0, seed, with_scores=False, solver=record)
    child = Path(__file__).with_name("sklearn_refit.py")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "problems.npz"
        np.savez(
            src,
            n=len(problems),
            **{f"X{i}": X for i, (X, _) in enumerate(problems)},
            **{f"y{i}": y for i, (_, y) in enumerate(problems)},
        )
        for python in pythons:
            dst = Path(tmp) / "coefs.npz"
            proc = subprocess.run([str(python), str(child), str(src), str(dst)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{python}: sklearn_refit.py failed: {proc.stderr.strip()[-500:]}")
            with np.load(dst) as co:
                coefs = [(co[f"c{i}"].copy(), float(co[f"b{i}"])) for i in range(len(problems))]
                versions, n_iter = json.loads(str(co["versions"])), co["n_iter"].tolist()
            it = iter(coefs)
            rewards = fit_obd_rewards_obp_quickstart(
                log, n_folds, 1.0, seed, with_scores=False, solver=lambda X, y, it=it: next(it)
            )
            est = evaluate(ope_data(log, dist, rewards), ("dm", "dr"), n_bootstrap=0)
            runs.append(
                {
                    "python": str(python),
                    "versions": versions,
                    "n_iter": n_iter,
                    **{f"{k}_value": e.value for k, e in est.items()},
                    **{f"{k}_relative_error": e.relative_error(truth) for k, e in est.items()},
                }
            )
    return {"truth": truth, "base_model": "LogisticRegression(max_iter=1000, random_state=12345)", "runs": runs}


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


def markdown_tables(result: dict[str, Any]) -> str:
    """The OPE tables as Markdown (what docs/benchmarks_exploration.md shows)."""
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


def write_json(data: Any, path: str | Path) -> Path:
    import json

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(p)
    return p


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
