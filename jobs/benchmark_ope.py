"""Benchmark off-policy estimators on the Open Bandit sample and the tuned policy on held-out replay.

    python jobs/benchmark_ope.py [--out out/benchmark_ope.json] [--skip-replay] [--tuned-policy REF] [--sklearn-eras]

Prints Markdown tables (ours beside the published figures) and writes them as JSON.
--sklearn-eras / --sklearn-env SPEC re-run the published reward model under other scikit-learn
releases, each in a virtualenv built once under --envs-dir (needs the package index).
REF is a policy JSON file, an MLflow run id, runs:/ or models:/ URI (default: the
file `jobs/tune_exploration.py` writes for ml100k_replay.yaml).
"""

from __future__ import annotations

import argparse
import sys

from lmrec.config import load_config
from lmrec.exploration.artifacts import load_policy_config
from lmrec.exploration.benchmark import (SKLEARN_ERAS, load_action_dist, markdown_tables, protocol_i, protocol_ii, published_pipeline_reruns,
                                         replay_markdown, rerun_pythons, simulation_spread, solver_sensitivity, write_json)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/benchmark_ope.json")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n-bootstrap", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=30, help="bootstrap runs of protocol (ii); 0 skips it")
    p.add_argument("--sim-seeds", type=int, default=10, help="protocol (i) relative errors over this many pi_e simulation seeds; 0 skips it")
    p.add_argument("--skip-obd", action="store_true")
    p.add_argument("--skip-replay", action="store_true")
    p.add_argument("--replay-config", default="jobs/configs/tune_exploration/ml100k_replay.yaml")
    p.add_argument("--tuned-policy", default="out/tune_exploration_ml100k_replay_policy.json")
    p.add_argument("--repeats", type=int, default=5, help="seeds per stochastic policy on held-out replay")
    p.add_argument("--reference-dist", default="tests/data/obd_bts_action_dist_obp.json",
                   help="obp's BTS action distribution (JSON with 'action_dist'), an extra pi_e for protocol (i); '' skips it")
    p.add_argument("--sklearn-env", action="append", default=[], metavar="SPEC", help="pip requirements of one install (repeatable)")
    p.add_argument("--sklearn-eras", action="store_true", help="add the installs in SKLEARN_ERAS (obp 0.5's time)")
    p.add_argument("--envs-dir", default="out/sklearn_envs")
    args = p.parse_args(argv)
    pythons = [] if args.skip_obd else rerun_pythons(args.sklearn_env + list(SKLEARN_ERAS if args.sklearn_eras else ()), args.envs_dir)
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
    sys.exit(main())
