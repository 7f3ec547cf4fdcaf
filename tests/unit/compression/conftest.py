"""Shared fixtures of the compression unit tests: small seeded models and a tiny prepared dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from compress_helpers import NUM_ITEMS

from lmrec.models import SeqRecModel, build_config, init_weights_


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a loaded 2-core machine an OpenMP pool
    that spins for a busy core made these tests 30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def make_model() -> Callable[..., SeqRecModel]:
    """A seeded tiny SeqRecModel (eval mode, no dropout unless asked) over NUM_ITEMS items."""

    def make(seed: int = 0, **overrides: Any) -> SeqRecModel:
        overrides.setdefault("dropout", 0.0)
        m = SeqRecModel(build_config("tiny", NUM_ITEMS, **overrides))
        init_weights_(m, seed)
        return m.eval()

    return make


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small learnable synthetic dataset prepared in-process (no Ray)."""
    from lmrec.data.config import DataConfig, SyntheticConfig
    from lmrec.data.prepare import prepare_local
    from lmrec.data.synthetic import generate

    syn = SyntheticConfig(num_users=200, num_items=NUM_ITEMS, num_clusters=6, mean_seq_len=12, zipf_alpha=0.5, seed=3)
    cfg = DataConfig(dataset="synthetic", synthetic=syn)
    return prepare_local(cfg, generate(syn), tmp_path_factory.mktemp("prep") / "p").path
