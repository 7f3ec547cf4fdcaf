"""Item content as model inputs: text embeddings and attribute ids aligned to item_idx.

`load_item_features` reads a prepared dataset's `items.parquet` (text, attributes) and, for
text, an embedding folder written by the embedding stage (`lmrec.content.embed`:
`embeddings.parquet` with `item_id`, `embedding`). Row 0 of every array is padding.
Text embeddings are L2-normalised, so their projection starts at the scale of the ID
embeddings whatever the encoder. Ray-free and torch-free: the training loop turns the arrays
into the model's content buffers (`ItemFusion.set_content`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

EMBEDDINGS = "embeddings.parquet"


class ItemFeatureError(ValueError):
    """Item features that cannot be used (no content, non-finite embeddings, unknown ids)."""


@dataclass
class ItemFeatures:
    """(V = num_items + 1) arrays; None where the model takes no such content."""

    text: np.ndarray | None = None  # (V, D) float32, unit rows (zero where no text)
    has_text: np.ndarray | None = None  # (V,) float32 in {0, 1}
    attrs: np.ndarray | None = None  # (V, A) int64 attribute ids, 0 = empty slot
    attribute_vocab: list[str] = field(default_factory=list)  # attribute id i <-> attribute_vocab[i - 1]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def text_dim(self) -> int:
        return 0 if self.text is None else int(self.text.shape[1])

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_vocab)


def read_embeddings(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(original item ids int64 [n], float32 [n, dim]) of an embedding folder."""
    t = pq.read_table(Path(folder) / EMBEDDINGS)
    dim = t.schema.field("embedding").type.list_size
    flat = t.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return t.column("item_id").to_numpy().astype(np.int64), np.asarray(flat, np.float32).reshape(-1, dim)


def normalise(vectors: np.ndarray, what: str = "text embeddings") -> np.ndarray:
    """Unit rows (zero rows stay zero); non-finite values are refused, naming `what`."""
    vectors = np.asarray(vectors, np.float32)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise ItemFeatureError(f"{what}: {int(bad.sum())} row(s) hold NaN or infinite values")
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norm > 0, norm, 1.0)


def attribute_ids(rows: list[list[str]], vocab: dict[str, int], width: int) -> tuple[np.ndarray, int]:
    """(n, width) ids of each row's attributes in `vocab` (unknown ones skipped), and how many were cut."""
    out = np.zeros((len(rows), width), np.int64)
    cut = 0
    for i, row in enumerate(rows):
        ids = [vocab[a] for a in row if a in vocab]
        cut += max(0, len(ids) - width)
        out[i, : min(width, len(ids))] = ids[:width]
    return out, cut


def load_item_features(
    prepared_path: str | Path,
    embeddings_path: str | Path | None = None,
    attributes: bool = False,
    max_attributes: int = 16,
) -> ItemFeatures:
    """Features of every item of a prepared dataset, in item_idx order."""
    prepared_path = Path(prepared_path)
    items = pq.read_table(prepared_path / "items.parquet")
    idx = items.column("item_idx").to_numpy().astype(np.int64)
    ids = items.column("item_id").to_numpy().astype(np.int64)
    v = int(idx.max()) + 1 if len(idx) else 1
    out = ItemFeatures(stats={"items": len(idx)})
    if embeddings_path is not None:
        emb_ids, emb = read_embeddings(embeddings_path)
        emb = normalise(emb, f"text embeddings in {embeddings_path}")
        pos = {int(i): k for k, i in enumerate(emb_ids)}
        text = np.zeros((v, emb.shape[1]), np.float32)
        has = np.zeros(v, np.float32)
        for row, item in zip(idx, ids):
            k = pos.get(int(item))
            if k is not None:
                text[row], has[row] = emb[k], 1.0
        out.text, out.has_text = text, has
        out.stats["items_with_text"] = int(has.sum())
        if not has.any():
            raise ItemFeatureError(f"{embeddings_path}: none of the {len(idx)} items of {prepared_path} is in it")
    if attributes:
        if "attributes" not in items.column_names:
            raise ItemFeatureError(f"{prepared_path}: the dataset has no item attributes (data.items.source)")
        rows = items.column("attributes").to_pylist()
        names = sorted({a for row in rows for a in (row or [])})
        if not names:
            raise ItemFeatureError(f"{prepared_path}: no item has an attribute")
        vocab = {a: i + 1 for i, a in enumerate(names)}
        attrs, cut = attribute_ids([row or [] for row in rows], vocab, max_attributes)
        full = np.zeros((v, max_attributes), np.int64)
        full[idx] = attrs
        out.attrs, out.attribute_vocab = full, names
        out.stats |= {
            "attributes": len(names),
            "items_with_attributes": int((attrs != 0).any(axis=1).sum()),
            "attributes_cut": cut,
        }
    return out
