"""Benchmark compressed variants against their teacher: params, bytes, NDCG@10/HR@10, CPU p50/p99 latency.

    python jobs/benchmark_compression.py --config jobs/configs/benchmark_compression/ml100k.yaml [--out out/x.json] [key=value ...]
    ray job submit --working-dir . -- python jobs/benchmark_compression.py --config jobs/configs/benchmark_compression/synthetic.yaml

Ray-free and single-process (the latency it reports is one process's). The work is
in `lmrec.compression.bench`; this file parses the config, runs, prints, writes JSON.
"""

from __future__ import annotations

import argparse
import sys

from lmrec.compression.bench import BenchmarkConfig, format_table, retime_saved, run_benchmark
from lmrec.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML under jobs/configs/benchmark_compression/")
    parser.add_argument("--out", default="out/benchmark_compression.json", help="results JSON")
    parser.add_argument("--retime", action="store_true", help="only re-time the artifacts an earlier run saved")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. latency.iters=50")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(BenchmarkConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    result = retime_saved(cfg, args.out) if args.retime else run_benchmark(cfg, args.out)
    print(format_table(result))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
