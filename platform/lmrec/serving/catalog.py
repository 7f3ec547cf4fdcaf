"""A fused model's catalog that grows while it serves: validate, encode, store and apply new items (Ray-free).

A fused model (lmrec.models.seqrec.ItemFusion) represents an item it never saw by its content alone
(`content_rows`). Serving ranks with `freeze_items(fused, rows)`: a plain ID-table model whose extra
rows are the added items, traced like any ID-only model. Additions are kept as immutable version
files (lmrec.serving.catalog_store) per registered model: the replica that takes an update
validates and encodes it, publishes the next version and applies it; the others apply it from the
stored embeddings when they poll; a newly loaded model version (hot swap, restart) re-applies them
all, skipping items that its own vocabulary has.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.data.item_features import ItemFeatureError, attribute_ids, normalise
from lmrec.models.seqrec import SeqRecModel, content_rows, freeze_items
from lmrec.serving.catalog_store import CatalogItem, CatalogStore, CatalogVersion, VersionConflict
from lmrec.serving.config import ServeConfig
from lmrec.serving.runtime import LoadedModel, RequestError, trace_forward

log = logging.getLogger(__name__)
MAX_PUBLISH_TRIES = 20  # versions taken by concurrent writers before an update gives up (503)
_INT64 = (-(2**63), 2**63)


@dataclass
class ItemCatalog:
    """What a served fused model needs to grow: the fused model (content rows), the frozen model
    it serves (cast, last-position scoring applied, eager), and the items added so far."""

    fused: SeqRecModel  # as loaded (float32, CPU): only its `fusion` and ID table are used
    base: torch.nn.Module  # freeze_items(fused) as load_model prepared it, before tracing
    base_ids: np.ndarray  # the model's own vocabulary
    content: dict[str, Any]  # metadata `item_content`: encoder, attribute vocabulary, ...
    store: CatalogStore
    trace_mode: str  # trace_forward's mode for the grown model
    version: int = 0  # the last catalog version applied
    added: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ids appended to base_ids
    rows: torch.Tensor | None = None  # (len(added), H) their content rows

    @property
    def text_encoder(self) -> str | None:
        return self.content.get("text_encoder") if self.fused.config.text_dim else None

    @property
    def attribute_vocab(self) -> dict[str, int]:
        """attribute string -> id (ids from 1); empty when the model takes no attributes."""
        if not self.fused.config.num_attributes:
            return {}
        return {a: i + 1 for i, a in enumerate(self.content.get("attribute_vocab") or [])}


def catalog_folder(cfg: ServeConfig, info: dict[str, Any]) -> Path:
    """`catalog.dir` (default LMREC_HOME/catalogs) / the registered model's name (a path's name + hash otherwise)."""
    from lmrec.paths import lmrec_home

    root = Path(cfg.catalog.dir).expanduser() if cfg.catalog.dir else lmrec_home() / "catalogs"
    name = info.get("name")
    if not name:
        uri = str(info.get("uri") or info.get("source"))
        name = f"{Path(uri.rstrip('/')).name}-{hashlib.blake2b(uri.encode(), digest_size=4).hexdigest()}"
    return root / re.sub(r"[^A-Za-z0-9._-]", "_", str(name))


def attach(
    loaded: LoadedModel,
    fused: SeqRecModel,
    base: torch.nn.Module,
    meta: dict[str, Any],
    cfg: ServeConfig,
    trace_mode: str,
) -> LoadedModel:
    """`loaded` with its catalog, and the stored additions applied (a broken store is logged, not fatal:
    the poller retries it)."""
    cat = ItemCatalog(
        fused=fused.eval(),  # not cast or moved: its blocks are the served model's (freeze_items shares them)
        base=base,
        base_ids=loaded.item_ids,
        content=dict(meta.get("item_content") or {}),
        store=CatalogStore(catalog_folder(cfg, loaded.info)),
        trace_mode=trace_mode,
    )
    loaded = dataclasses.replace(loaded, catalog=cat)
    try:
        return catch_up(loaded) or loaded
    except Exception as exc:  # noqa: BLE001 (unreadable store, encoder missing: serve the model; the poller retries)
        log.warning("catalog additions not applied to %s: %s", loaded.version, exc)
        return loaded


def catch_up(loaded: LoadedModel) -> LoadedModel | None:
    """`loaded` grown by the versions other writers published since, or None if there are none."""
    cat = loaded.catalog
    pending = cat.store.read_after(cat.version)
    return grow(loaded, pending) if pending else None


def add_items(loaded: LoadedModel, items: list[dict[str, Any]], cfg: ServeConfig) -> tuple[LoadedModel, dict]:
    """Validate, encode, publish and apply one update. Returns (grown model, response body).

    RequestError for what the client can fix (nothing is stored then): ID-only model 409, an id in
    the catalog already 409, anything else about the items 422."""
    cat = loaded.catalog
    if cat is None:
        raise RequestError(
            409,
            f"{loaded.version} is an ID-only model (fusion 'id'): its catalog is the one it was trained on. "
            "Items can be added to models trained with content (model.content.fusion)",
        )
    if not items:
        raise RequestError(422, "'items' must not be empty")
    if len(items) > cfg.catalog.max_items_per_request:
        raise RequestError(
            422, f"{len(items)} items in one request; the limit is {cfg.catalog.max_items_per_request} (split it)"
        )
    pending = cat.store.read_after(cat.version)
    new = check_items(cat, items, _known(loaded, pending))
    encoder, emb = encode_texts(cat, new)
    latest = max([cat.version, *(v.version for v in pending)])
    for _ in range(MAX_PUBLISH_TRIES):
        try:
            mine = cat.store.publish(CatalogVersion(latest + 1, new, encoder, emb))
            break
        except VersionConflict:  # another replica took it: its items may collide with these
            more = cat.store.read_after(latest)
            pending += more
            latest = max(v.version for v in more) if more else latest + 1
            check_items(cat, items, _known(loaded, pending))
    else:
        raise RequestError(503, f"catalog busy: {MAX_PUBLISH_TRIES} versions were taken by other writers; retry")
    grown = grow(loaded, [*pending, mine])
    body = {
        "catalog_version": grown.catalog.version,
        "added": len(new),
        "catalog_items": len(grown.catalog.added),
        "num_items": grown.num_items,
        "model_version": grown.version,
    }
    return grown, body


def _known(loaded: LoadedModel, pending: list[CatalogVersion]) -> np.ndarray:
    extra = [it.item_id for v in pending for it in v.items]
    return np.concatenate([loaded.item_ids, np.asarray(extra, np.int64)]) if extra else loaded.item_ids


def check_items(cat: ItemCatalog, items: list[dict[str, Any]], known: np.ndarray) -> list[CatalogItem]:
    """The request's items as CatalogItems, or RequestError naming the offending item ids."""
    ids = [int(it["item_id"]) for it in items]
    out_of_range = [i for i in ids if not _INT64[0] <= i < _INT64[1]]
    if out_of_range:
        raise RequestError(422, f"item id(s) {out_of_range[:10]} are not 64-bit integers")
    arr = np.asarray(ids, np.int64)
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise RequestError(422, f"item id(s) {uniq[counts > 1][:10].tolist()} appear more than once in the request")
    taken = arr[np.isin(arr, known)]
    if len(taken):
        raise RequestError(409, f"item id(s) {taken[:10].tolist()} are already in the catalog")
    vocab, width, encoder = cat.attribute_vocab, int(cat.fused.config.max_attributes), cat.text_encoder
    out, unknown, too_many, empty = [], {}, [], []
    for item_id, it in zip(ids, items):
        text = (it.get("text") or "").strip() or None
        attrs = tuple(dict.fromkeys(it.get("attributes") or ()))  # in order, without repeats
        bad = [a for a in attrs if a not in vocab]
        if bad:
            unknown[item_id] = bad
        if len(attrs) > width:
            too_many.append(item_id)
        if not (text and encoder) and not attrs:
            empty.append(item_id)
        out.append(CatalogItem(item_id, text, attrs))
    if unknown:
        known_list = list(vocab)[:20]
        hint = f"known: {known_list}{' ...' if len(vocab) > 20 else ''}" if vocab else "this model uses no attributes"
        first = dict(list(unknown.items())[:10])
        raise RequestError(422, f"unknown attribute(s) {first} (not in the model's attribute vocabulary; {hint})")
    if too_many:
        raise RequestError(422, f"item(s) {too_many[:10]} have more than the model's {width} attributes")
    if empty:
        wants = [f"text (encoder {encoder})" if encoder else "", "attributes" if vocab else ""]
        raise RequestError(
            422, f"item(s) {empty[:10]} carry no content this model uses: give {' or '.join(w for w in wants if w)}"
        )
    return out


_encoders: dict[str, Any] = {}
_encoders_lock = threading.Lock()


def _encoder(spec: str) -> Any:
    """The text encoder named `spec`, loaded once per process."""
    from lmrec.models.encoders import load_encoder

    with _encoders_lock:
        if spec not in _encoders:
            _encoders[spec] = load_encoder(spec)
        return _encoders[spec]


def encode_texts(cat: ItemCatalog, items: list[CatalogItem]) -> tuple[str | None, np.ndarray | None]:
    """(encoder, (n, text_dim) unit rows, zero where an item has no text) as training computed them."""
    spec = cat.text_encoder
    if not spec:
        return None, None
    emb = np.zeros((len(items), cat.fused.config.text_dim), np.float32)
    rows = [i for i, it in enumerate(items) if it.text]
    if rows:
        vec = _encoder(spec).encode([items[i].text for i in rows])
        if vec.shape[1] != emb.shape[1]:
            raise RuntimeError(f"encoder {spec} gives {vec.shape[1]}-d vectors; the model takes {emb.shape[1]}")
        try:
            emb[rows] = normalise(vec, f"text embeddings ({spec}) of items {[items[i].item_id for i in rows][:10]}")
        except ItemFeatureError as exc:
            raise RequestError(422, str(exc)) from exc
    return spec, emb


def grow(loaded: LoadedModel, versions: list[CatalogVersion]) -> LoadedModel:
    """`loaded` with the items of `versions` appended (those it knows already skipped), traced anew."""
    cat = loaded.catalog
    spec, vocab, width = cat.text_encoder, cat.attribute_vocab, int(cat.fused.config.max_attributes)
    known = set(np.concatenate([cat.base_ids, cat.added]).tolist())
    ids, texts, has, attrs, encode_later = [], [], [], [], []
    for v in versions:
        stored = v.embeddings if v.encoder == spec and v.embeddings is not None else None
        if stored is not None and stored.shape[1] != cat.fused.config.text_dim:
            stored = None
        for i, item in enumerate(v.items):
            use_text = bool(spec and item.text)
            row_attrs = [a for a in item.attributes if a in vocab]
            if item.item_id in known or not (use_text or row_attrs):
                continue  # in this model's own vocabulary, or nothing this model can represent it by
            known.add(item.item_id)
            ids.append(item.item_id)
            attrs.append(row_attrs)
            has.append(1.0 if use_text else 0.0)
            if use_text and stored is None:
                encode_later.append((len(texts), item.text))
            texts.append(stored[i] if use_text and stored is not None else None)
    if encode_later:  # stored with another encoder (an earlier model version's): encode as this model does
        vec = normalise(_encoder(spec).encode([t for _, t in encode_later]), f"text embeddings ({spec})")
        for (pos, _), row in zip(encode_later, vec):
            texts[pos] = row
    version = max([cat.version, *(v.version for v in versions)])
    if not ids:
        return dataclasses.replace(loaded, catalog=dataclasses.replace(cat, version=version))
    dim = cat.fused.config.text_dim
    text_t = (
        torch.from_numpy(np.stack([t if t is not None else np.zeros(dim, np.float32) for t in texts])) if dim else None
    )
    attr_t = torch.from_numpy(attribute_ids(attrs, vocab, width)[0]) if cat.fused.config.num_attributes else None
    rows = content_rows(cat.fused, text_t, torch.tensor(has) if dim else None, attr_t)
    rows = rows if cat.rows is None else torch.cat([cat.rows, rows])
    added = np.concatenate([cat.added, np.asarray(ids, np.int64)])
    item_ids = np.concatenate([cat.base_ids, added])
    model = freeze_items(cat.base, rows)
    forward, kind = trace_forward(model, cat.trace_mode, len(item_ids), loaded.max_seq_len, loaded.device)
    return dataclasses.replace(
        loaded,
        model=forward,
        forward=kind,
        item_ids=item_ids,
        catalog=dataclasses.replace(cat, version=version, added=added, rows=rows),
    )
