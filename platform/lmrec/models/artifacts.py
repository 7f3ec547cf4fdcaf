"""Model artifacts: safetensors weights + JSON config + item vocabulary. No pickle.

A folder holds `model.safetensors`, `config.json` (SeqRecConfig), `vocab.json`
(item_idx i+1 <-> original item id) and `metadata.json`. Loading reads only
these formats, so a model pulled from a registry cannot run code; a folder that
carries pickle-based weights instead is refused with `UnsafeArtifactError`.
Training checkpoints are not artifacts: DCP pickles parts of them (`lmrec.training.checkpoint`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lmrec.models.config import SeqRecConfig
from lmrec.models.seqrec import SeqRecModel

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
VOCAB = "vocab.json"
METADATA = "metadata.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib")


class UnsafeArtifactError(ValueError):
    """The artifact would need unpickling (or another code-executing format) to load."""


def save_model_dir(
    directory: str | Path,
    config: SeqRecConfig,
    state_dict: dict[str, torch.Tensor],
    item_ids: list[int],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write an artifact folder; tensors are made contiguous and moved to CPU."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(directory / WEIGHTS), metadata={"format": "lmrec-seqrec"})
    (directory / CONFIG).write_text(json.dumps(config.to_dict(), indent=1))
    (directory / VOCAB).write_text(json.dumps({"item_ids": [int(i) for i in item_ids]}))
    meta = {
        "format": "lmrec-seqrec",
        "format_version": 1,
        "num_parameters": config.num_parameters(),
        **(metadata or {}),
    }
    (directory / METADATA).write_text(json.dumps(meta, indent=1, default=str))
    return directory


def check_safe(directory: str | Path) -> None:
    """Refuse folders whose weights come in a pickle-based format."""
    directory = Path(directory)
    if not (directory / WEIGHTS).is_file():
        unsafe = [p.name for p in directory.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES]
        if unsafe:
            raise UnsafeArtifactError(
                f"{directory}: refusing to load pickle-based weights {unsafe}; lmrec loads only {WEIGHTS} (safetensors)"
            )
        raise FileNotFoundError(f"{directory}: no {WEIGHTS} found")
    with open(directory / WEIGHTS, "rb") as fh:
        head = fh.read(2)
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:2] == b"PK":
        # A safetensors file opens with its header length (u64, little-endian): lengths such as
        # 896 or 1152 begin with b"\x80\x03" / b"\x80\x04", so check the header before refusing.
        if not _has_safetensors_header(directory / WEIGHTS):
            raise UnsafeArtifactError(f"{directory / WEIGHTS}: is a pickle/zip payload, not safetensors; refused")


def _has_safetensors_header(path: Path) -> bool:
    """True when `path` starts with a u64 length followed by that many bytes of JSON object."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if not 2 <= n <= min(size - 8, 100_000_000):
            return False
        try:
            return isinstance(json.loads(fh.read(n)), dict)
        except ValueError:
            return False


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (raises on anything that is not safetensors)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises SafetensorError on foreign formats
        raise UnsafeArtifactError(f"{path}: not a valid safetensors file ({exc})") from exc


def load_model_dir(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[SeqRecModel, list[int], dict[str, Any]]:
    """(model in eval mode, item vocabulary, metadata) from an artifact folder."""
    directory = Path(directory)
    check_safe(directory)
    config = SeqRecConfig.from_dict(json.loads((directory / CONFIG).read_text()))
    model = SeqRecModel(config)
    tensors = read_tensors(directory / WEIGHTS)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{directory}: weights do not match config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    vocab = json.loads((directory / VOCAB).read_text())["item_ids"]
    if len(vocab) != config.num_items:
        raise ValueError(f"{directory}: vocabulary has {len(vocab)} items, config says {config.num_items}")
    meta = json.loads((directory / METADATA).read_text()) if (directory / METADATA).exists() else {}
    return model.to(device).eval(), vocab, meta


def artifact_size_bytes(directory: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
