"""Benchmark one FeedbackLog replica's cost per served slate: ingest CPU and join-window memory.

    python jobs/benchmark_feedback_log.py [--impressions 4000] [--rounds 5] [--out out/benchmark_feedback_log.json]

Ray-free and single-process; the work is in `lmrec.serving.feedback_benchmark`.
This file parses arguments, runs, prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys

from lmrec.exploration.benchmark import write_json
from lmrec.serving.feedback_benchmark import markdown, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impressions", type=int, default=4000)
    p.add_argument("--candidates", type=int, default=100, help="exploration.num_candidates")
    p.add_argument("--k", type=int, default=10, help="slate size")
    p.add_argument("--ship-batch", type=int, default=20, help="slates per add_impressions call")
    p.add_argument("--file-batch", type=int, default=512, help="feedback.batch_size")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="out/benchmark_feedback_log.json")
    a = p.parse_args(argv)
    for name in ("impressions", "candidates", "k", "ship_batch", "file_batch", "rounds"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.k > a.candidates:
        p.error("--k must be <= --candidates")
    r = run(a.impressions, a.candidates, a.k, a.ship_batch, a.file_batch, a.rounds)
    print(markdown(r))
    print(f"\nwrote {write_json(r, a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
