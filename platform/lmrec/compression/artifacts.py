"""Save and load compressed variants in the safe artifact format (safetensors + JSON, no pickle).

Every variant is a standard lmrec artifact folder (`model.safetensors`,
`config.json`, `vocab.json`, `metadata.json`); `metadata.json["compression"]`
says how to rebuild it:

- dense fp32 / pruned models: nothing extra. A structurally pruned model's
  `config.json` records its smaller shapes (`num_heads`, `num_kv_heads`,
  `head_dim`, `intermediate_size`), so `lmrec.models.artifacts.load_model_dir`
  loads it as is;
- fp16 / bf16: tensors are stored in that dtype; `load_variant` keeps it;
- int8: each quantized projection is stored as `<name>.weight_int8` (I8) and
  `<name>.weight_scale` (F32); `int8_modules` lists them, so the loader builds
  empty `Int8Linear`s there before reading the tensors.

Serving calls `load_variant` for every artifact: it returns exactly what
`load_model_dir` returns for uncompressed ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmrec.compression.quantize import Int8Linear, int8_module_names, int8_shell
from lmrec.models.artifacts import (
    CONFIG,
    METADATA,
    VOCAB,
    WEIGHTS,
    check_safe,
    load_model_dir,
    read_tensors,
    save_model_dir,
)
from lmrec.models.config import SeqRecConfig
from lmrec.models.seqrec import SeqRecModel

COMPRESSION_KEY = "compression"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def weights_dtype(model: nn.Module) -> str:
    """Name of the floating dtype of the model's parameters ("float32", "float16", "bfloat16")."""
    dts = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dts) != 1:
        raise ValueError(f"mixed parameter dtypes {sorted(map(str, dts))}: cast the whole model")
    return str(dts.pop()).removeprefix("torch.")


def describe_model(model: SeqRecModel) -> dict[str, Any]:
    """How the weights are stored: quantization mode, dtype, int8 modules."""
    int8 = int8_module_names(model)
    dtype = weights_dtype(model)
    mode = "int8" if int8 else {"float16": "fp16", "bfloat16": "bf16"}.get(dtype, "none")
    return {"quantization": mode, "weights_dtype": dtype, "int8_modules": int8}


def save_variant(
    directory: str | Path,
    model: SeqRecModel,
    item_ids: list[int],
    metadata: dict[str, Any] | None = None,
    compression: dict[str, Any] | None = None,
) -> Path:
    """Write `model` (dense, pruned, fp16/bf16 or int8) as a safe artifact folder."""
    info = {**(compression or {}), **describe_model(model)}
    meta = {**(metadata or {}), COMPRESSION_KEY: info, "num_parameters_stored": parameter_count(model)}
    state = {k: v for k, v in model.state_dict().items()}
    return save_model_dir(directory, model.config, state, item_ids, meta)


def load_variant(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[SeqRecModel, list[int], dict[str, Any]]:
    """(model in eval mode, item vocabulary, metadata) for any artifact folder, compressed or not."""
    directory = Path(directory)
    check_safe(directory)
    meta = json.loads((directory / METADATA).read_text()) if (directory / METADATA).exists() else {}
    info = meta.get(COMPRESSION_KEY) or {}
    if not info.get("int8_modules"):
        model, vocab, meta = load_model_dir(directory, device)
        dtype = DTYPES.get(info.get("weights_dtype", "float32"), torch.float32)
        if dtype != torch.float32:
            from lmrec.compression.quantize import cast_weights

            model = cast_weights(model, dtype)
        return model.eval(), vocab, meta
    config = SeqRecConfig.from_dict(json.loads((directory / CONFIG).read_text()))
    model = int8_shell(SeqRecModel(config), info["int8_modules"])
    tensors = read_tensors(directory / WEIGHTS)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{directory}: int8 weights do not match config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    vocab = json.loads((directory / VOCAB).read_text())["item_ids"]
    if len(vocab) != config.num_items:
        raise ValueError(f"{directory}: vocabulary has {len(vocab)} items, config says {config.num_items}")
    return model.to(device).eval(), vocab, meta


def parameter_count(model: nn.Module) -> int:
    """Weights the model holds: float parameters plus int8 values (one per original weight).

    Per-channel scales are bookkeeping (one per output row) and are not counted, so
    an int8 model has the same parameter count as its float original.
    """
    n = sum(p.numel() for p in model.parameters())
    for mod in model.modules():
        if isinstance(mod, Int8Linear):
            n += mod.weight_int8.numel() + (mod.bias.numel() if mod.bias is not None else 0)
    return n


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the persistent state (parameters and saved buffers) held in memory."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
