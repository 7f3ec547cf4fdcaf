"""Ray job: search distillation / pruning / quantization settings for the best quality-latency-size trade-off.

    ray job submit --working-dir . -- python jobs/tune_compression.py --config jobs/configs/tune_compression/ml100k.yaml [key=value ...]

Thin on purpose: the config is validated before Ray is asked for anything, the
teacher and dataset are checked before any trial starts, and
`lmrec.tuning.compression.run_compression_search` does the work.
"""

from __future__ import annotations

import argparse
import sys

from lmrec.config import ConfigError, load_config
from lmrec.tuning.compression import TuneCompressionConfig, run_compression_search


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML under jobs/configs/tune_compression/")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. search.num_samples=4")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(TuneCompressionConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_compression_search(cfg)
    except ValueError as exc:  # bad teacher / catalog mismatch, raised before any trial
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"parent MLflow run {result.parent_run_id}: {len(result.front)} variant(s) on the front, "
        f"{len(result.failed)} failed trial(s), {result.seconds:.0f}s"
    )
    for row in result.front:
        print(f"  {row['label']}: version {row.get('model_version')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
