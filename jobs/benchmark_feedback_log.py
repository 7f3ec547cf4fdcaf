"""Benchmark one FeedbackLog replica's cost per served slate: ingest CPU and join-window memory.

    python jobs/benchmark_feedback_log.py [--impressions 4000] [--rounds 5] [--out out/benchmark_feedback_log.json]

Ray-free and single-process; the work is in `lmrec.benchmarks.feedback_log`, which
parses the arguments, runs, prints a table and writes JSON.
"""

import sys

from lmrec.benchmarks.feedback_log import main

if __name__ == "__main__":
    sys.exit(main())
