"""Session-wide settings: an isolated LMREC_HOME and Ray token auth for clients."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/support.py

_HOME = tempfile.mkdtemp(prefix="lmrec-test-home-")
os.environ.setdefault("LMREC_HOME", _HOME)
os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray >= 2.60 clusters require the token
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # integration tests point it at their own server
os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture(scope="session")
def lmrec_home() -> Path:
    return Path(os.environ["LMREC_HOME"])
