"""The OPE benchmark's solver checks (`lmrec.benchmarks.ope_solvers`): scikit-learn's lbfgs and other installs.

Need scikit-learn (the `[bench]` extra) and the Open Bandit sample; skip without either.
"""

from __future__ import annotations

import pytest

from lmrec.data.open_bandit import obd_dir

PUBLISHED_DM = 0.003545  # REFERENCE_NUMBERS.md 5c (i), obp 0.5.4 quickstart
PUBLISHED_DR = 0.004727

pytestmark = pytest.mark.skipif(
    not (obd_dir() / "random" / "all" / "all.csv").exists(), reason="Open Bandit sample not found"
)


def test_solver_sensitivity_moves_only_with_the_stopping_rule() -> None:
    """The published configuration under scikit-learn's lbfgs approaches our Newton optimum as its tolerance shrinks."""
    pytest.importorskip("sklearn")
    from lmrec.benchmarks.ope_solvers import solver_sensitivity

    runs = {r["solver"]: r for r in solver_sensitivity(tols=(1e-4, 1e-10))["runs"]}
    newton, loose, tight = (
        runs["lmrec Newton (optimum)"],
        runs["scikit-learn lbfgs, tol 0.0001"],
        runs["scikit-learn lbfgs, tol 1e-10"],
    )
    assert newton["dr_value"] == pytest.approx(PUBLISHED_DR, abs=1e-6) and newton["dm_value"] == pytest.approx(
        PUBLISHED_DM, abs=1e-6
    )
    assert abs(tight["dr_value"] - newton["dr_value"]) < 1e-8 < abs(loose["dr_value"] - newton["dr_value"])


def test_published_pipeline_reruns_refit_the_same_problems_in_another_interpreter(tmp_path) -> None:
    """A child interpreter fitting the written problems gives what scikit-learn gives in-process; failures name their cause."""
    pytest.importorskip("sklearn")
    import sys

    from lmrec.benchmarks.ope_solvers import make_python_env, published_pipeline_reruns, solver_sensitivity

    (rerun,) = published_pipeline_reruns([sys.executable])["runs"]
    (_, inproc) = solver_sensitivity(tols=(1e-4,))["runs"]  # same objective, same default tol, same problems
    import sklearn

    assert (
        rerun["versions"]["scikit-learn"] == sklearn.__version__ and len(rerun["n_iter"]) == 9
    )  # 3 folds x 3 positions
    assert (
        max(rerun["n_iter"]) < 1000
    )  # converged under obp's max_iter, so in-process (max_iter 100,000) is the same fit
    for key in ("dm_value", "dr_value", "dr_relative_error"):
        assert rerun[key] == pytest.approx(inproc[key], rel=1e-12), key
    with pytest.raises(RuntimeError, match="/bin/false"):
        published_pipeline_reruns(["/bin/false"])
    with pytest.raises(RuntimeError, match="lmrec-no-such-package"):
        make_python_env("lmrec-no-such-package==0.0.0", tmp_path)
    assert list(tmp_path.iterdir()) == []  # the failed env is removed, not left half-built for reuse
