"""Where lmrec keeps state and finds data.

State (MLflow SQLite store, artifacts, prepared datasets, checkpoints) lives under
`LMREC_HOME` (default `~/.lmrec`). The data directory comes from an explicit
argument, then `LMREC_DATA_DIR`, then `../shared/data` when that exists.
"""

from __future__ import annotations

import os
from pathlib import Path


def lmrec_home() -> Path:
    """State directory (created on first use)."""
    home = Path(os.environ.get("LMREC_HOME", "~/.lmrec")).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def _shared_data_candidates() -> list[Path]:
    here = Path(__file__).resolve()
    # <repo>/platform/lmrec/paths.py -> <repo>/../shared/data; also relative to the cwd.
    return [here.parents[3] / "shared" / "data", Path.cwd().resolve().parent / "shared" / "data"]


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """`explicit`, else `LMREC_DATA_DIR`, else `../shared/data` if it exists, else LMREC_HOME/data.

    Every branch returns the resolved path (symlinks followed), so one folder has one spelling
    whichever rule found it: `../shared` is often a symlink.
    """
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("LMREC_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    for cand in _shared_data_candidates():
        if cand.is_dir():
            return cand.resolve()
    return lmrec_home() / "data"


def prepared_dir() -> Path:
    path = lmrec_home() / "prepared"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_storage_path() -> Path:
    """Ray Train/Tune storage for runs and checkpoints when none is configured."""
    path = lmrec_home() / "ray_results"
    path.mkdir(parents=True, exist_ok=True)
    return path
