"""Synthetic interaction logs with structure a sequential model can learn.

Items have power-law popularity (1 / rank^alpha) and belong to hidden clusters.
Each user walks a Markov chain over clusters: stay in the current cluster, move to
its designated successor, or jump to a popularity-weighted random cluster; each
step emits a popularity-weighted item of the current cluster. A model that learns
the transitions beats popularity ranking by a wide margin, which tests use as a
signal that training works. Generation is vectorised over users and chunked, so
millions of users over a 1M-item catalog fit in memory chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmrec.data.config import SyntheticConfig
from lmrec.data.readers import INTERACTIONS

T0 = 1_600_000_000  # first timestamp, seconds
STEP_SECONDS = 60


class _World:
    """The hidden structure: popularity, clusters, successor map (fixed by the seed)."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        rng = np.random.default_rng(cfg.seed)
        n, c = cfg.num_items, cfg.num_clusters
        ranks = rng.permutation(n) + 1
        self.popularity = 1.0 / ranks.astype(np.float64) ** cfg.zipf_alpha
        cluster_of = np.arange(n) % c  # every cluster gets at least one item
        rng.shuffle(cluster_of)
        self.cluster_of = cluster_of
        self.order = np.argsort(cluster_of, kind="stable")  # items grouped by cluster
        counts = np.bincount(cluster_of, minlength=c)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        w = self.popularity[self.order]
        cum = np.cumsum(w)
        seg_start = np.repeat(cum[starts] - w[starts], counts)
        seg_total = np.repeat(np.add.reduceat(w, starts), counts)
        # Cluster k's items occupy (k, k + 1] in this array: sample with k + uniform.
        self.item_cdf = np.repeat(np.arange(c), counts) + (cum - seg_start) / seg_total
        self.item_cdf[np.cumsum(counts) - 1] = np.arange(1, c + 1)  # exact segment ends
        cluster_pop = np.bincount(cluster_of, weights=self.popularity, minlength=c)
        self.cluster_p = cluster_pop / cluster_pop.sum()
        self.successor = rng.permutation(c)
        self.num_clusters = c

    def sample_items(self, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(clusters.shape)
        pos = np.searchsorted(self.item_cdf, clusters + np.clip(u, 1e-12, 1.0), side="left")
        return self.order[np.minimum(pos, len(self.order) - 1)] + 1  # item ids are 1-based


def _lengths(cfg: SyntheticConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    extra = cfg.mean_seq_len - cfg.min_seq_len
    if extra <= 0:
        return np.full(n, cfg.min_seq_len, dtype=np.int64)
    lens = cfg.min_seq_len + rng.geometric(1.0 / (extra + 1.0), size=n) - 1
    return np.clip(lens, cfg.min_seq_len, cfg.max_seq_len).astype(np.int64)


def generate_chunks(cfg: SyntheticConfig, users_per_chunk: int = 200_000) -> Iterator[pa.Table]:
    """Yield INTERACTIONS tables covering users 1..num_users in order."""
    world = _World(cfg)
    for start in range(0, cfg.num_users, users_per_chunk):
        n = min(users_per_chunk, cfg.num_users - start)
        rng = np.random.default_rng([cfg.seed, start])
        lengths = _lengths(cfg, n, rng)
        max_len = int(lengths.max())
        clusters = np.empty((n, max_len), dtype=np.int64)
        clusters[:, 0] = rng.choice(world.num_clusters, size=n, p=world.cluster_p)
        for t in range(1, max_len):
            prev = clusters[:, t - 1]
            r = rng.random(n)
            jump = rng.choice(world.num_clusters, size=n, p=world.cluster_p)
            clusters[:, t] = np.where(
                r < cfg.stay_prob, prev, np.where(r < cfg.stay_prob + cfg.next_prob, world.successor[prev], jump)
            )
        valid = np.arange(max_len)[None, :] < lengths[:, None]
        flat_clusters = clusters[valid]
        items = world.sample_items(flat_clusters, rng)
        users = np.repeat(np.arange(start + 1, start + n + 1, dtype=np.int64), lengths)
        steps = np.nonzero(valid)[1].astype(np.int64)
        offsets = rng.integers(0, 86_400, size=n)  # users start at different times of day
        ts = T0 + np.repeat(offsets, lengths) + steps * STEP_SECONDS
        yield pa.table([users, items.astype(np.int64), ts, np.ones(len(items), dtype=np.float32)], schema=INTERACTIONS)


_COLOURS = "red blue green yellow black white orange purple brown grey".split()
_THINGS = "shoe guitar novel camera lamp bicycle tea jacket puzzle clock".split()


def item_content(cfg: SyntheticConfig) -> pa.Table:
    """Item content (lmrec.data.items.CONTENT) that reveals each item's hidden cluster: text
    "<colour> <thing> number <i>" and the attribute `cluster:<c>`, the same for all items of a cluster."""
    from lmrec.data.items import CONTENT

    world = _World(cfg)
    c = world.cluster_of
    texts = [f"{_COLOURS[k % 10]} {_THINGS[k // 10 % 10]} number {i + 1}" for i, k in enumerate(c)]
    attrs = [[f"cluster:{k}"] for k in c]
    ids = np.arange(1, cfg.num_items + 1, dtype=np.int64)
    return pa.table([ids, texts, attrs], schema=CONTENT)


def generate(cfg: SyntheticConfig) -> pa.Table:
    """All interactions as one table (for small configs and tests)."""
    return pa.concat_tables(list(generate_chunks(cfg)))


def write_synthetic(cfg: SyntheticConfig, out_dir: Path, users_per_chunk: int = 200_000) -> list[Path]:
    """Write Parquet part files (one per user chunk) into `out_dir`; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, table in enumerate(generate_chunks(cfg, users_per_chunk)):
        path = out_dir / f"part-{i:05d}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        paths.append(path)
    return paths
