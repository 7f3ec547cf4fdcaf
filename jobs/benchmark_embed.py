"""Item-text encoder throughput (items/s): wordllama and two Hugging Face shapes, in-process and
through the Ray Data actor pool of `lmrec embed`.

    python jobs/benchmark_embed.py [--items 1682] [--hf-items 256] [--hf bert-base,decoder-125m]
        [--concurrency 1,2] [--rounds 3] [--threads 2] [--out out/benchmark_embed.json]

Starts a local Ray; the work is in `lmrec.benchmarks.embed`, which prints a table and writes JSON.
"""

import sys

from lmrec.benchmarks.embed import main

if __name__ == "__main__":
    sys.exit(main())
