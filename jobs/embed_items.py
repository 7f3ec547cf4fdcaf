"""Ray job: embed a dataset's item text (Ray Data actor pool) and log it to MLflow.

    ray job submit --working-dir . -- python jobs/embed_items.py --config jobs/configs/embed_items/ml100k_wordllama.yaml [key=value ...]

Thin on purpose: the config is parsed and validated and the encoder is loaded once (before any Ray
resource is requested), then `lmrec.content.job.run_embed_job` does the work.
"""

import sys

from lmrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
