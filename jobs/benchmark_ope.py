"""Benchmark off-policy estimators on the Open Bandit sample and the tuned policy on held-out replay.

    python jobs/benchmark_ope.py [--out out/benchmark_ope.json] [--skip-replay] [--tuned-policy REF] [--sklearn-eras]

Prints Markdown tables (ours beside the published figures) and writes them as JSON.
--sklearn-eras / --sklearn-env SPEC re-run the published reward model under other scikit-learn
releases, each in a virtualenv built once under --envs-dir (needs the package index).
REF is a policy JSON file, an MLflow run id, runs:/ or models:/ URI (default: the
file `jobs/tune_exploration.py` writes for ml100k_replay.yaml). The solver checks need
scikit-learn: `pip install 'lmrec[bench]'`. The work is in `lmrec.benchmarks.ope`.
"""

from __future__ import annotations

import sys

from lmrec.benchmarks.ope import main

if __name__ == "__main__":
    sys.exit(main())
