"""Worst request latency while one model replica is SIGKILLed under load: one replica against two.

    python jobs/benchmark_replica_kill.py [--topologies split,fused] [--replicas 1,2] [--rounds 3]
        [--concurrency 16] [--out out/benchmark_replica_kill.json]

Starts its own local Ray head; the work is in `lmrec.benchmarks.replica_kill`, which parses the
arguments, runs, prints a table and writes JSON.
"""

import sys

from lmrec.benchmarks.replica_kill import main

if __name__ == "__main__":
    sys.exit(main())
