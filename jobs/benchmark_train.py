"""Benchmark: bare PyTorch loop vs Ray Train 1 worker vs Ray Train 2 workers (FSDP2).

    python jobs/benchmark_train.py [--cpus 2] [--out out/benchmark_train.json] [key=value ...]
    ray job submit --working-dir . -- python jobs/benchmark_train.py --cpus 8 train.use_gpu=true

Prints a table and writes JSON; the figures go in docs/benchmarks.md.
"""

import sys

from lmrec.benchmarks.train import main

if __name__ == "__main__":
    sys.exit(main())
