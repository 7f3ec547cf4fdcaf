"""Search exploration-policy hyperparameters with Ray Tune (Optuna, ASHA for replay).

    python jobs/tune_exploration.py --config jobs/configs/tune_exploration/obd_random.yaml [key=value ...]

Parses and validates the config before any Ray call, runs the search
(`lmrec.tuning.exploration.run_exploration_search`), prints the comparison of
the tuned policy with greedy and epsilon = 0.1, and exits.
"""

from __future__ import annotations

import argparse
import json
import sys

from lmrec.config import ConfigError, load_config
from lmrec.tuning.exploration import TuneExplorationConfig, preflight, run_exploration_search


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML under jobs/configs/tune_exploration/")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. search.num_samples=8")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(TuneExplorationConfig, args.config, args.overrides)
        preflight(cfg)  # its inputs exist: checked before Ray starts
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    result = run_exploration_search(cfg)
    print(result.table())
    print(
        json.dumps(
            {
                "parent_run_id": result.parent_run_id,
                "policy_uri": result.policy_uri,
                "best": result.best.to_dict(),
                "seconds": round(result.seconds, 1),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
