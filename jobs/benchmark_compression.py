"""Benchmark compressed variants against their teacher: params, bytes, NDCG@10/HR@10, CPU p50/p99 latency.

    python jobs/benchmark_compression.py --config jobs/configs/benchmark_compression/ml100k.yaml [--out out/x.json] [key=value ...]
    ray job submit --working-dir . -- python jobs/benchmark_compression.py --config jobs/configs/benchmark_compression/synthetic.yaml

Ray-free and single-process (the latency it reports is one process's). The work is
in `lmrec.benchmarks.compression`, which parses the config, runs, prints and writes JSON.
"""

import sys

from lmrec.benchmarks.compression import main

if __name__ == "__main__":
    sys.exit(main())
