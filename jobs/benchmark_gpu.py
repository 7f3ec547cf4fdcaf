"""GPU checks and benchmarks of the training and ranking code, without Ray.

    python jobs/benchmark_gpu.py --prepared <prepared dataset folder> [--parts fsdp,throughput,forward]
    python jobs/benchmark_gpu.py --prepared <folder> --parts quality --config jobs/configs/train/beauty_cpu.yaml key=value ...

FSDP2 over NCCL (bf16 and fp32 gradients vs one process, crash and resume), training
throughput per model size, the serving forward per batch size. Prints a table and
writes JSON; the figures go in docs/benchmarks.md with the GPU named.
"""

import sys

from lmrec.benchmarks.gpu import main

if __name__ == "__main__":
    sys.exit(main())
