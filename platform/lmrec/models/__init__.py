"""Sequential recommender models (no ray, no torch.distributed)."""

from lmrec.ids import PAD_ID
from lmrec.models.config import SeqRecConfig
from lmrec.models.seqrec import SeqRecModel, init_weights_
from lmrec.models.sizes import SIZES, build_config, size_table

__all__ = ["PAD_ID", "SeqRecConfig", "SeqRecModel", "init_weights_", "SIZES", "build_config", "size_table"]
