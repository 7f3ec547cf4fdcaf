"""Sequential recommender models (no ray, no torch.distributed).

The names below load on first use (PEP 562), so configs that only need `lmrec.models.sizes`
or `lmrec.models.config` (the exploration search's, in every Tune trial process) do not
import torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lmrec.ids import PAD_ID

if TYPE_CHECKING:
    from lmrec.models.config import SeqRecConfig
    from lmrec.models.seqrec import SeqRecModel, init_weights_
    from lmrec.models.sizes import SIZES, build_config, size_table

_SOURCES = {
    "SeqRecConfig": "lmrec.models.config",
    "SeqRecModel": "lmrec.models.seqrec",
    "init_weights_": "lmrec.models.seqrec",
    "SIZES": "lmrec.models.sizes",
    "build_config": "lmrec.models.sizes",
    "size_table": "lmrec.models.sizes",
}

__all__ = ["PAD_ID", "SeqRecConfig", "SeqRecModel", "init_weights_", "SIZES", "build_config", "size_table"]


def __getattr__(name: str) -> Any:
    if name in _SOURCES:
        value = getattr(importlib.import_module(_SOURCES[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'lmrec.models' has no attribute {name!r}")
