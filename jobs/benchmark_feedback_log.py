"""Benchmark a FeedbackLog shard's cost per served slate: ingest CPU (at 1, 2, 4 shards) and join-window memory.

    python jobs/benchmark_feedback_log.py [--impressions 4000] [--rounds 5] [--shards 1,2,4] [--out out/benchmark_feedback_log.json]

Ray-free (sharded ingest forks one process per shard); the work is in `lmrec.benchmarks.feedback_log`, which
parses the arguments, runs, prints a table and writes JSON.
"""

import sys

from lmrec.benchmarks.feedback_log import main

if __name__ == "__main__":
    sys.exit(main())
