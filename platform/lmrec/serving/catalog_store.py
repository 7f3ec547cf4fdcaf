"""Versioned, immutable files of the items added to a served model's catalog (Ray- and torch-free).

A folder per registered model holds `v000001.json`, `v000002.json`, ...: version N is the Nth
update (its items only). A file is written to a temporary name, synced, then published with
`os.link`, which is atomic and fails if the name exists: a reader never sees half a file, and of
two writers that both take version N+1, one wins and the other gets `VersionConflict` (it re-reads
and retries). Each item carries its text and attribute strings (a later model version may use
another encoder or attribute vocabulary) and its normalised text embedding from the encoder named
in the file, so that other replicas apply it without re-encoding. JSON only (no pickle).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "lmrec-catalog"
_NAME = re.compile(r"^v(\d{6,})\.json$")


class CatalogFileError(ValueError):
    """A version file that cannot be read (not JSON, wrong format); the message names it."""


class VersionConflict(RuntimeError):
    """Another writer published this version first."""


@dataclass(frozen=True)
class CatalogItem:
    item_id: int
    text: str | None = None
    attributes: tuple[str, ...] = ()


@dataclass
class CatalogVersion:
    """One update: its items and, where text was encoded, their unit-row embeddings."""

    version: int
    items: list[CatalogItem]
    encoder: str | None = None  # the text encoder `embeddings` come from
    embeddings: np.ndarray | None = None  # (n, D) float32, zero rows where an item has no text
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        rows = []
        for i, item in enumerate(self.items):
            row: dict = {"item_id": item.item_id, "text": item.text, "attributes": list(item.attributes)}
            if self.embeddings is not None and item.text:
                row["embedding"] = base64.b64encode(self.embeddings[i].astype("<f4").tobytes()).decode()
            rows.append(row)
        dim = None if self.embeddings is None else int(self.embeddings.shape[1])
        return {
            "format": FORMAT,
            "format_version": 1,
            "version": self.version,
            "created_at": self.created_at,
            "encoder": self.encoder,
            "text_dim": dim,
            "items": rows,
        }

    @classmethod
    def from_json(cls, doc: dict) -> CatalogVersion:
        if doc.get("format") != FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, not {FORMAT!r}")
        items, dim = doc["items"], doc.get("text_dim")
        emb = np.zeros((len(items), dim), np.float32) if dim else None
        out = []
        for i, row in enumerate(items):
            out.append(CatalogItem(int(row["item_id"]), row.get("text"), tuple(row.get("attributes") or ())))
            if emb is not None and row.get("embedding"):
                emb[i] = np.frombuffer(base64.b64decode(row["embedding"]), "<f4")
        return cls(int(doc["version"]), out, doc.get("encoder"), emb, float(doc.get("created_at", 0.0)))


class CatalogStore:
    """The version files of one model's catalog additions, in `folder`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def versions(self) -> list[int]:
        """Published version numbers, ascending (none while the folder does not exist)."""
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.match(p.name)))

    def latest(self) -> int:
        v = self.versions()
        return v[-1] if v else 0

    def path(self, version: int) -> Path:
        return self.folder / f"v{version:06d}.json"

    def read(self, version: int) -> CatalogVersion:
        path = self.path(version)
        try:
            out = CatalogVersion.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CatalogFileError(f"{path}: unreadable catalog version ({type(exc).__name__}: {exc})") from exc
        if out.version != version:
            raise CatalogFileError(f"{path}: holds version {out.version}")
        return out

    def read_after(self, version: int) -> list[CatalogVersion]:
        """Every published version above `version`, ascending."""
        return [self.read(v) for v in self.versions() if v > version]

    def publish(self, update: CatalogVersion) -> CatalogVersion:
        """Publish `update` as its version number; VersionConflict if that version exists already."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".tmp-{uuid.uuid4().hex}.json"
        try:
            with open(tmp, "w") as fh:
                json.dump(update.to_json(), fh)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, self.path(update.version))  # atomic, and never replaces an existing version
            except FileExistsError:
                raise VersionConflict(f"catalog version {update.version} was published by another writer") from None
            _sync_dir(self.folder)
        finally:
            tmp.unlink(missing_ok=True)
        return update


def _sync_dir(folder: Path) -> None:
    """Make the new directory entry durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
