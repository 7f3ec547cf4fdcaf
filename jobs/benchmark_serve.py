"""Benchmark: model forward ceiling vs Ray Serve (default proxy, HAProxy, HAProxy + throughput mode)
vs a plain FastAPI + uvicorn peer, with batching on/off, cache hits vs misses and open-loop latency.

    python jobs/benchmark_serve.py [--size small] [--levels 1,16,64] [--profile] [--out out/benchmark_serve.json]

Starts its own local Ray heads (one per variant: the proxy settings are read when Ray
starts) on loopback. Prints a table and writes JSON; the figures go in docs/benchmarks.md.
"""

import sys

from lmrec.benchmarks.serve import main

if __name__ == "__main__":
    sys.exit(main())
