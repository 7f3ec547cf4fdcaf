"""Ray job: the whole loop — prepare, train, evaluate, compression search, exploration search,
promote, deploy/update the Serve app — resumable per stage when resubmitted with the same name.

    ray job submit --working-dir . -- python jobs/pipeline.py --config jobs/configs/pipeline/ml100k.yaml [key=value ...]
"""

import sys

from lmrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
