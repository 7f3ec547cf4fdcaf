"""The cold-start protocol (issue 22): popularity, content-only nearest neighbours, an ID-only and a
fused model on the items that arrive last, removed from training.

    python jobs/benchmark_cold_start.py [--datasets ml-100k,beauty] [--cold-fraction 0.15] [--seeds 0,1]
        [--epochs 60] [--fusion gate] [--id-dropout 0.3] [--out out/benchmark_cold_start.json]

ML-100k uses wordllama text embeddings (computed with Ray Data, cached) and genre attributes; Beauty
its S3-Rec attributes. The work is in `lmrec.benchmarks.cold_start`, which prints a table and writes JSON.
"""

import sys

from lmrec.benchmarks.cold_start import main

if __name__ == "__main__":
    sys.exit(main())
