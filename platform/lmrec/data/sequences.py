"""Prepared sequences in memory, and the arrays training and evaluation consume.

Ray-free. Sequences are held CSR-style (flat item array + offsets). The
leave-one-out split is: train = items[:-2], valid target = items[-2], test target =
items[-1]; valid history = train, test history = train + [valid].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmrec.ids import PAD_ID

Split = Literal["valid", "test"]


@dataclass
class SequenceData:
    """All users' chronological sequences (item_idx space, 1..num_items)."""

    items: np.ndarray  # (total,) int32
    offsets: np.ndarray  # (num_users + 1,) int64
    ratings: np.ndarray  # (total,) float32
    ts: np.ndarray  # (total,) int64
    user_ids: np.ndarray  # (num_users,) original ids
    num_items: int
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, with_meta: bool = True) -> SequenceData:
        """Read a prepared dataset folder; `with_meta=False` skips timestamps and ratings."""
        path = Path(path)
        manifest = json.loads((path / "manifest.json").read_text())
        cols = ["user_id", "items"] + (["ts", "ratings"] if with_meta else [])
        table = pq.read_table(path / manifest["files"]["sequences"], columns=cols)
        lengths = pc.list_value_length(table["items"]).to_numpy().astype(np.int64)
        total = int(lengths.sum())
        return cls(
            items=pc.list_flatten(table["items"]).to_numpy().astype(np.int32),
            offsets=np.concatenate([[0], np.cumsum(lengths)]),
            ratings=pc.list_flatten(table["ratings"]).to_numpy().astype(np.float32)
            if with_meta
            else np.ones(total, np.float32),
            ts=pc.list_flatten(table["ts"]).to_numpy().astype(np.int64) if with_meta else np.zeros(total, np.int64),
            user_ids=table["user_id"].to_numpy(),
            num_items=int(manifest["num_items"]),
            manifest=manifest,
        )

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    def sequence(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u] : self.offsets[u + 1]]

    def history(self, u: int, split: Split) -> np.ndarray:
        """Items the model may see before predicting `split`'s target."""
        seq = self.sequence(u)
        return seq[:-2] if split == "valid" else seq[:-1]

    def target(self, u: int, split: Split) -> int:
        seq = self.sequence(u)
        return int(seq[-2] if split == "valid" else seq[-1])

    def train_item_counts(self) -> np.ndarray:
        """(num_items + 1,) interaction counts over the train part (popularity)."""
        ends = self.offsets[1:]
        mask = np.ones(len(self.items), dtype=bool)
        mask[ends - 1] = False
        mask[ends - 2] = False
        return np.bincount(self.items[mask], minlength=self.num_items + 1)


def left_pad(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """Right-align each sequence's last `length` items in a (B, length) PAD-filled array."""
    out = np.full((len(seqs), length), PAD_ID, dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[i, length - len(s) :] = s
    return out


def train_examples(
    data: SequenceData, max_len: int, sliding_window: bool = False, include_valid: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Next-item examples from each user's train part: inputs s[:-1], targets s[1:].

    Each row covers the last `max_len` steps. With `sliding_window`, long sequences
    also yield earlier non-overlapping windows, so no interaction is wasted.
    `include_valid` trains on items[:-1] (for a final fit before test evaluation).
    """
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    cut = 1 if include_valid else 2
    for u in range(data.num_users):
        seq = data.sequence(u)[:-cut]
        end = len(seq)
        while end >= 2:
            window = seq[max(0, end - max_len - 1) : end]
            inputs.append(window[:-1])
            targets.append(window[1:])
            if not sliding_window:
                break
            end -= max_len
    return left_pad(inputs, max_len), left_pad(targets, max_len)


def trim_padding(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Drop leading columns that are padding in every row of the first array.

    Left-padded batches of short sequences then cost only their longest row.
    """
    first = arrays[0]
    nonpad = (first != PAD_ID).any(axis=0)
    start = int(np.argmax(nonpad)) if nonpad.any() else first.shape[1] - 1
    start = min(start, first.shape[1] - 1)
    return tuple(a[:, start:] for a in arrays)


def eval_arrays(
    data: SequenceData, split: Split, max_len: int, users: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs (U, max_len), targets (U,), user indices) for evaluating `split`."""
    users = np.arange(data.num_users) if users is None else users
    hist = [data.history(int(u), split) for u in users]
    targets = np.array([data.target(int(u), split) for u in users], dtype=np.int64)
    return left_pad(hist, max_len), targets, users


def shard_batches(
    num_examples: int, batch_size: int, rank: int, world_size: int, epoch: int, seed: int, shuffle: bool = True
) -> np.ndarray:
    """This rank's example indices for one epoch as (steps, batch_size).

    All ranks get the same number of steps (FSDP and DDP need lockstep): the global
    permutation is padded by wrapping around, like torch's DistributedSampler.
    """
    if num_examples == 0:
        return np.zeros((0, batch_size), dtype=np.int64)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples) if shuffle else np.arange(num_examples)
    per_step = batch_size * world_size
    steps = -(-num_examples // per_step)
    total = steps * per_step
    if total > num_examples:
        order = np.resize(order, total)  # wrap around
    return order.reshape(steps, world_size, batch_size)[:, rank, :]
