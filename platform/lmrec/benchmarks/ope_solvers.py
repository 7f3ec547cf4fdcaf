"""DM and DR of the published reward-model configuration under other solvers and other scikit-learn installs.

Part of the OPE benchmark (`lmrec.benchmarks.ope`). The objective is fixed by the published
protocol; only the solver changes: scikit-learn's lbfgs stopped at several tolerances
(in-process), or the published pipeline re-executed under older scikit-learn/SciPy/NumPy
releases in their own interpreters (`sklearn_refit.py`). scikit-learn comes with the
`[bench]` extra (`pip install 'lmrec[bench]'`); without it `solver_sensitivity` returns {}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmrec.benchmarks.obd_bts import bts_action_dist, ope_data
from lmrec.data.open_bandit import load_obd
from lmrec.exploration.estimators import evaluate
from lmrec.exploration.open_bandit import fit_obd_rewards_obp_quickstart

SOLVER_TOLS = (1e-4, 1e-6, 1e-8, 1e-10)


def solver_sensitivity(
    data_dir: str | None = None, tols: tuple[float, ...] = SOLVER_TOLS, seed: int = 12345, n_folds: int = 3
) -> dict[str, Any]:
    """DM and DR of the published reward-model configuration when only the solver's stopping rule changes.

    The objective is fixed (L2 logistic regression, C = 1, per position, the published
    folds); our Newton solver runs to its optimum, scikit-learn's lbfgs (the solver behind
    the published figures) stops at `tol`. pi_e is the published protocol's. Needs
    scikit-learn (the `[bench]` extra); returns {} without it.
    """
    try:
        from sklearn.linear_model import LogisticRegression as SkLogistic
    except ImportError:
        return {}

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
