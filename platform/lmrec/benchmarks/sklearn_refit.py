"""Refit the published reward model's per-fold, per-position problems with whatever scikit-learn is installed.

    <python> sklearn_refit.py problems.npz coefs.npz

Run by `lmrec.benchmarks.ope_solvers.published_pipeline_reruns` under *other*
interpreters (virtualenvs holding older scikit-learn, SciPy and NumPy releases), so it
imports nothing but NumPy and scikit-learn and runs on NumPy 1.x. Each problem
`X{i}`, `y{i}` is fitted by obp 0.5.4 quickstart's base model,
`LogisticRegression(max_iter=1000, random_state=12345)` (C = 1, lbfgs, scikit-learn's
default tol), and `c{i}`, `b{i}` (coefficients, intercept) and the iteration counts come
back with the library versions.
"""

import json
import sys

import numpy as np


def main(src: str, dst: str) -> int:
    import scipy
    import sklearn
    from sklearn.linear_model import LogisticRegression

    problems = np.load(src)
    out, iters = {}, []
    for i in range(int(problems["n"])):
        model = LogisticRegression(max_iter=1000, random_state=12345).fit(problems[f"X{i}"], problems[f"y{i}"])
        out[f"c{i}"], out[f"b{i}"] = model.coef_[0], model.intercept_[0]
        iters.append(int(np.ravel(model.n_iter_)[0]))
    versions = {
        "scikit-learn": sklearn.__version__,
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    np.savez(dst, n_iter=np.asarray(iters), versions=json.dumps(versions), **out)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: sklearn_refit.py problems.npz coefs.npz")
    sys.exit(main(sys.argv[1], sys.argv[2]))
