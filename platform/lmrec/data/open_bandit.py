"""The Open Bandit Dataset (OBD) reader, with pandas (obp's loader does not work with pandas >= 2).

Files: `<data_dir>/open_bandit/<behavior>/<campaign>/all.csv` (one row per shown
item: timestamp, item_id, position 1..3, click, propensity_score, hashed user
features, user-item affinities) and `item_context.csv` (item features).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BEHAVIORS = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
LEN_LIST = 3
REQUIRED_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")
USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")


class OBDFormatError(ValueError):
    """An OBD file is missing a column or holds values out of range (names file and column)."""


@dataclass
class OBDLog:
    """One behaviour policy's logs: one sample per shown item (position 0-based)."""

    behavior: str
    campaign: str
    path: Path
    actions: np.ndarray  # (n,) item ids 0..n_actions-1
    positions: np.ndarray  # (n,) 0..len_list-1
    rewards: np.ndarray  # (n,) clicks 0/1
    pscore: np.ndarray  # (n,) behaviour propensity of (item, position)
    timestamps: np.ndarray  # (n,) datetime64[us] UTC
    user_codes: np.ndarray  # (n, 4) integer codes of the hashed user features
    user_levels: list[int]  # number of distinct values of each user feature
    affinity: np.ndarray  # (n, n_actions) user-item affinity
    item_features: np.ndarray  # (n_actions, d) numeric + one-hot categorical item features
    n_actions: int
    len_list: int = LEN_LIST
    item_codes: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 0))
    )  # (n_actions, c) sorted-label codes of categorical item features
    item_numeric: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (n_actions, d) numeric item features

    @property
    def n(self) -> int:
        return len(self.actions)

    @property
    def on_policy_value(self) -> float:
        """Mean click over all shown items: the ground truth V(pi) of the logging policy."""
        return float(self.rewards.mean())


def obd_dir(data_dir: str | Path | None = None) -> Path:
    from lmrec.paths import data_dir as resolve

    return resolve(data_dir) / "open_bandit"


def load_obd(data_dir: str | Path | None = None, behavior: str = "random", campaign: str = "all") -> OBDLog:
    """Read one behaviour policy's CSV and the item context (pandas; no obp)."""
    import pandas as pd

    if behavior not in BEHAVIORS:
        raise ValueError(f"behavior must be one of {BEHAVIORS}, got {behavior!r}")
    if campaign not in CAMPAIGNS:
        raise ValueError(f"campaign must be one of {CAMPAIGNS}, got {campaign!r}")
    base = obd_dir(data_dir) / behavior / campaign
    path, item_path = base / "all.csv", base / "item_context.csv"
    for p in (path, item_path):
        if not p.is_file():
            raise FileNotFoundError(f"Open Bandit file not found: {p}")
    df = pd.read_csv(path, index_col=0)
    for col in (*REQUIRED_COLUMNS, *USER_FEATURES):
        if col not in df.columns:
            raise OBDFormatError(f"{path}: column '{col}' is missing")
    items = pd.read_csv(item_path, index_col=0)
    if "item_id" not in items.columns:
        raise OBDFormatError(f"{item_path}: column 'item_id' is missing")
    n_actions = int(items["item_id"].max()) + 1
    actions = df["item_id"].to_numpy(np.int64)
    positions = df["position"].to_numpy(np.int64) - 1  # files are 1-based
    rewards = df["click"].to_numpy(np.float64)
    pscore = df["propensity_score"].to_numpy(np.float64)
    _check_range(path, "item_id", (actions < 0) | (actions >= n_actions))
    _check_range(path, "position", (positions < 0) | (positions >= LEN_LIST))
    _check_range(path, "click", (rewards != 0) & (rewards != 1))
    _check_range(path, "propensity_score", ~((pscore > 0) & (pscore <= 1)))
    codes, levels = [], []
    for col in USER_FEATURES:
        c, uniq = pd.factorize(df[col].astype(str), sort=True)
        codes.append(c)
        levels.append(len(uniq))
    aff_cols = [f"user-item_affinity_{a}" for a in range(n_actions)]
    affinity = (
        df[aff_cols].to_numpy(np.float64) if all(c in df.columns for c in aff_cols) else np.zeros((len(df), n_actions))
    )
    items = items.sort_values("item_id")
    numeric = items[[c for c in items.columns if c != "item_id" and items[c].dtype.kind in "fi"]].to_numpy(np.float64)
    feats, item_codes = [numeric], []
    for col in items.columns:
        if col != "item_id" and items[col].dtype.kind not in "fi":
            feats.append(pd.get_dummies(items[col].astype(str)).to_numpy(np.float64))
            item_codes.append(pd.factorize(items[col].astype(str), sort=True)[0])
    ts = pd.to_datetime(df["timestamp"], utc=True).to_numpy(dtype="datetime64[us]")
    return OBDLog(
        behavior,
        campaign,
        path,
        actions,
        positions,
        rewards,
        pscore,
        ts,
        np.stack(codes, axis=1),
        levels,
        affinity,
        np.hstack(feats),
        n_actions,
        item_codes=np.stack(item_codes, axis=1) if item_codes else np.zeros((n_actions, 0), dtype=np.int64),
        item_numeric=numeric,
    )


def _check_range(path: Path, column: str, bad: np.ndarray) -> None:
    if bad.any():
        raise OBDFormatError(
            f"{path}: column '{column}': {int(bad.sum())} row(s) out of range (first at row {int(np.argmax(bad))})"
        )
