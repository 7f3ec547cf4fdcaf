"""Ray job: search training hyperparameters (ASHA + Optuna TPE), each trial the standard training loop.

    ray job submit --working-dir . -- python jobs/tune_train.py --config jobs/configs/tune_train/beauty_fused.yaml [key=value ...]

Thin on purpose: the config is validated before Ray is asked for anything, an item-text encoder
that cannot load fails before Ray starts, and `lmrec.tuning.training.run_train_search` does the work.
"""

from __future__ import annotations

import argparse
import sys

from lmrec.config import ConfigError, load_config
from lmrec.tuning.training import TuneTrainConfig, run_train_search


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML under jobs/configs/tune_train/")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. search.num_samples=4")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(TuneTrainConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_train_search(cfg)
    except ValueError as exc:  # no item content, an encoder that cannot load: before any trial
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
