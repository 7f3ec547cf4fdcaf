"""Ray job: train, evaluate and register a SeqRec model.

    ray job submit --working-dir . -- python jobs/train.py --config jobs/configs/train/ml100k_tiny.yaml [key=value ...]

Thin on purpose: the config is parsed and validated (before any Ray resource is
requested), then `lmrec.training.trainer.run_train_job` does the work.
"""

import sys

from lmrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
