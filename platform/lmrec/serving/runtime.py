"""Ray-free serving core: load a model version, map ids, look up histories, rank a batch.

A `LoadedModel` is immutable once built; a replica swaps the reference it serves from
to change versions, so a request always sees one consistent model, vocabulary and
history store. Loading reads only safetensors + JSON (never pickles).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lmrec.data.sequences import left_pad, trim_padding
from lmrec.ids import PAD_ID
from lmrec.models.artifacts import load_model_dir
from lmrec.models.seqrec import attention_kernels
from lmrec.serving.config import ServeConfig

if TYPE_CHECKING:
    from lmrec.serving.catalog import ItemCatalog

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request the client can fix: maps to a 4xx with this message."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass
class UserHistories:
    """Known users' chronological item sequences (item_idx space), CSR-packed."""

    user_ids: np.ndarray  # sorted original ids (int64)
    offsets: np.ndarray
    items: np.ndarray

    def get(self, user_id: int) -> np.ndarray | None:
        i = int(np.searchsorted(self.user_ids, user_id))
        if i >= len(self.user_ids) or self.user_ids[i] != user_id:
            return None
        return self.items[self.offsets[i] : self.offsets[i + 1]]

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass
class LoadedModel:
    """One model version, ready to rank."""

    model: torch.nn.Module
    item_ids: np.ndarray  # item_idx - 1 -> original item id
    version: str  # what responses report, e.g. "lmrec-seqrec/3"
    info: dict[str, Any]
    max_seq_len: int
    device: torch.device
    dtype: str
    histories: UserHistories | None = None
    # "eager": `model` is the SeqRecModel. "torchscript": `model` is trace_forward's compiled
    # (x, seen, n) -> (top-n indices, values) module.
    forward: str = "eager"
    last_position_only: bool = False  # the last block computes the scored position only (last_position_scoring)
    loaded_at: float = field(default_factory=time.time)
    # Fused models only: the items added while serving and what grows the catalog (lmrec.serving.catalog).
    catalog: ItemCatalog | None = None
    _sorted_ids: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _sorted_idx: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _top_n: torch.nn.Module = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        order = np.argsort(self.item_ids, kind="stable")
        self._sorted_ids = self.item_ids[order]
        self._sorted_idx = (order + 1).astype(np.int64)
        self._top_n = self.model if self.forward == "torchscript" else _TopN(self.model)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def to_idx(self, ids: Sequence[int]) -> np.ndarray:
        """Original item ids -> item_idx; RequestError(422) naming unknown ids."""
        try:
            arr = np.asarray(ids, dtype=np.int64)
        except OverflowError:  # beyond 64 bits (JSON integers are unbounded): in no catalog
            bad = [i for i in ids if not -(2**63) <= i < 2**63][:10]
            raise RequestError(422, f"unknown item id(s) {bad} (not in the catalog of {self.version})") from None
        pos = np.searchsorted(self._sorted_ids, arr)
        pos_c = np.minimum(pos, len(self._sorted_ids) - 1)
        ok = self._sorted_ids[pos_c] == arr
        if not ok.all():
            bad = arr[~ok][:10].tolist()
            raise RequestError(422, f"unknown item id(s) {bad} (not in the catalog of {self.version})")
        return self._sorted_idx[pos_c]

    def to_ids(self, idx: np.ndarray) -> np.ndarray:
        return self.item_ids[np.asarray(idx) - 1]

    @torch.inference_mode()
    def rank(
        self, histories: Sequence[np.ndarray], n: int, exclude_seen: Sequence[bool], rows_per_forward: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`n` (item_idx, score) per history, as (B, n) arrays; seen items masked on request.

        `rows_per_forward` > 0 sorts the batch by history length and runs it in slices of at
        most that many rows, so that short histories are not padded to the batch's longest
        (on CPU, compute grows with padded tokens; docs/benchmarks.md, Serving). 0: one slice.
        With the compiled forward, all slices run in one call, which holds no GIL.
        """
        n = min(n, self.num_items)
        if not rows_per_forward or len(histories) <= rows_per_forward:
            slices = [np.arange(len(histories))]
        else:
            lengths = np.fromiter((min(len(h), self.max_seq_len) for h in histories), np.int64, len(histories))
            order = np.argsort(lengths, kind="stable")
            slices = np.array_split(order, -(-len(order) // rows_per_forward))
        xs, seens = zip(
            *(self._inputs([histories[i] for i in rows], [exclude_seen[i] for i in rows]) for rows in slices)
        )
        with attention_kernels(self.device):
            out = self._top_n(list(xs), list(seens), n)
        idx = np.empty((len(histories), n), np.int64)
        val = np.empty((len(histories), n), np.float32)
        for rows, (i, v) in zip(slices, out):
            idx[rows], val[rows] = _numpy(i), _numpy(v)
        return idx, val

    def _inputs(
        self, histories: Sequence[np.ndarray], exclude_seen: Sequence[bool]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One slice's left-padded windows and its seen-item ids (PAD_ID where nothing is masked)."""
        x = left_pad([h[-self.max_seq_len :] for h in histories], self.max_seq_len)
        (x,) = trim_padding(x)
        # Seen items of the whole history (not only the window) -> -inf, in one scatter:
        # rows are padded with PAD_ID, whose column is -inf already.
        width = max((len(h) for h, ex in zip(histories, exclude_seen) if ex), default=1)
        seen = np.full((len(histories), width), PAD_ID, dtype=np.int64)
        for i, (h, ex) in enumerate(zip(histories, exclude_seen)):
            if ex and len(h):
                seen[i, : len(h)] = h
        x_t, seen_t = torch.from_numpy(x), torch.from_numpy(seen)
        if self.device.type != "cpu":  # each torch call re-takes the GIL: none needed on CPU
            x_t, seen_t = x_t.to(self.device), seen_t.to(self.device)
        return x_t, seen_t


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.numpy() if t.device.type == "cpu" else t.cpu().numpy()


class _TopN(torch.nn.Module):
    """Scores, seen-item mask and top-n for a list of slices, as one module. Scripted around a
    traced forward (trace_forward), the whole step is one C++ call that releases the GIL, so a
    replica's busy event loop cannot stall it between ops."""

    def __init__(self, scorer: torch.nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(
        self, xs: list[torch.Tensor], seens: list[torch.Tensor], n: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i in range(len(xs)):
            scores = self.scorer(xs[i]).float()
            scores.scatter_(1, seens[i], float("-inf"))
            top = torch.topk(scores, n, dim=1)
            out.append((top.indices, top.values))
        return out


def pick_device(cfg: ServeConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _cast(model: torch.nn.Module, precision: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    """fp16/bf16 on GPU (the model stays resident), fp32 or int8 on CPU."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return model.to(device=device, dtype=torch.bfloat16), "bf16"
    if precision == "fp16":
        return model.to(device=device, dtype=torch.float16), "fp16"
    if precision == "int8":
        from lmrec.compression.quantize import quantize_int8

        return quantize_int8(model.to("cpu")), "int8"
    return model.to(device), "fp32"


def trace_forward(
    model: torch.nn.Module, mode: str, num_items: int, max_seq_len: int, device: torch.device
) -> tuple[torch.nn.Module, str]:
    """Scoring, seen-item mask and top-n compiled to TorchScript and checked against eager; or the eager model.

    Why: the compiled step runs as one C++ call that releases the GIL for its whole length.
    The eager Hugging Face forward is hundreds of small ops, each re-taking the GIL, so in a
    replica whose event loop is busy with requests every op waits for the loop (and the loop
    for it). Measured on this CPU with one busy Python thread beside it, a batch-8 forward took
    1150 ms eager instead of 54 ms, and 58 ms compiled (docs/benchmarks.md, Serving).

    How: the model is traced (generic over batch size, length and left padding: transformers
    never skips the attention mask while tracing), `_TopN` is scripted around the trace (top-n's
    n stays an argument), and the result is frozen (`torch.jit.freeze` + `optimize_for_inference`).
    The result is checked against the eager model on three shapes other than the traced one.
    `mode="auto"` falls back to eager (with a warning) if any step or the check fails, and
    `mode="torchscript"` raises. TorchScript is deprecated in torch 2.x: when a future torch
    drops it, "auto" keeps serving, eagerly.

    Returns (module, "torchscript") with module([x, ...], [seen, ...], n) -> [(indices, values), ...],
    or (model, "eager").
    """
    if mode == "eager":
        return model, "eager"
    n = min(10, num_items)
    sample = _sampler(num_items, device)
    try:
        with warnings.catch_warnings(), torch.inference_mode(), attention_kernels(device):
            warnings.simplefilter("ignore")  # TracerWarning on shape checks, and the deprecation notices
            traced = torch.jit.trace(model, (sample(2, min(8, max_seq_len), 3)[0],), check_trace=False)
            compiled = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(_TopN(traced)).eval()))
            for batch, length, pad in _check_shapes(max_seq_len):
                x, seen = sample(batch, length, pad)
                torch.testing.assert_close(
                    compiled([x], [seen], n)[0][1],
                    _TopN(model)([x], [seen], n)[0][1],
                    msg=lambda m, shape=tuple(x.shape): f"compiled top-{n} differs from eager at {shape}: {m}",
                )
    except Exception as exc:
        if mode == "torchscript":
            raise RuntimeError(f"forward='torchscript' was requested, but compiling the model failed: {exc}") from exc
        log.warning("serving the eager forward: compiling it failed (%s)", str(exc).splitlines()[0][:300])
        return model, "eager"
    return compiled, "torchscript"


def _check_shapes(max_seq_len: int) -> list[tuple[int, int, int]]:
    """(batch, length, left padding of the first row) that a changed forward is checked on at load."""
    return [(1, 1, 0), (3, max_seq_len, max_seq_len // 2), (5, max(2, max_seq_len // 3), 1)]


def _sampler(num_items: int, device: torch.device) -> Callable[[int, int, int], tuple[torch.Tensor, torch.Tensor]]:
    """sample(batch, length, pad) -> (x, seen): random windows, the first row left-padded by `pad`."""
    gen = torch.Generator().manual_seed(0)

    def sample(batch: int, length: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(1, num_items + 1, (batch, length), generator=gen)
        x[0, :pad] = PAD_ID  # left padding in the first row (never a fully padded row)
        seen = x[:, : max(1, length // 2)]  # the first half of each row as its history (pads mask column 0)
        return x.to(device), seen.to(device)

    return sample


def last_position_scoring(
    model: torch.nn.Module, dtype: str, num_items: int, max_seq_len: int, device: torch.device
) -> tuple[torch.nn.Module, bool]:
    """The model with its last block computing only the scored position, if that gives its scores.

    Why: scoring reads one position; the last block's query, attention output and MLP at every
    other position are wasted (about 20 % of a forward of the small model on this CPU;
    docs/benchmarks.md, Serving). How: `score_last_position_only`, then the scores are compared
    with the full forward's on the shapes `trace_forward` checks (float rounding apart, they are
    the same computation). Kept full where they differ, and for int8: its activations are
    quantized with one range per tensor, so one position gives other (if anything closer to
    fp32) scores than the sequence did, and the compression benchmarks measured the latter.
    Returns (model, applied).
    """
    from lmrec.models.seqrec import SeqRecModel, score_full_sequence, score_last_position_only

    if (
        not isinstance(model, SeqRecModel)
        or dtype == "int8"
        or any(type(m).__name__ == "Int8Linear" for m in model.modules())
    ):
        return model, False
    sample = _sampler(num_items, device)
    xs = [sample(batch, length, pad)[0] for batch, length, pad in _check_shapes(max_seq_len)]
    tol = 1e-4 if dtype == "fp32" else 2e-2
    with torch.inference_mode(), attention_kernels(device):
        full = [model(x)[:, 1:].float() for x in xs]
        score_last_position_only(model)
        try:
            for x, ref in zip(xs, full):
                torch.testing.assert_close(model(x)[:, 1:].float(), ref, rtol=tol, atol=tol)
        except Exception as exc:  # noqa: BLE001 - any mismatch or failure: score the full sequence
            score_full_sequence(model)
            log.warning(
                "scoring with the full last block: the last-position block differs (%s)", str(exc).splitlines()[0][:300]
            )
            return model, False
    return model, True


def load_histories(meta: dict[str, Any], data_dir: str | None) -> UserHistories | None:
    """Histories of the users the model was trained on, from its (cached) prepared dataset."""
    data_cfg = meta.get("data_config")
    if not data_cfg:
        return None
    from lmrec.config import from_dict
    from lmrec.data.config import DataConfig
    from lmrec.data.prepare import prepare_dataset
    from lmrec.data.sequences import SequenceData

    cfg = from_dict(DataConfig, data_cfg)
    if data_dir:
        cfg.data_dir = data_dir
    try:
        # In-process, not Ray Data: this runs in a replica's constructor, and Ray Data tasks
        # there can wait forever for CPUs that the app's own replicas hold.
        prepared = prepare_dataset(cfg, engine="local")
    except FileNotFoundError:
        return None
    data = SequenceData.load(prepared.path, with_meta=False)
    order = np.argsort(data.user_ids, kind="stable")
    lengths = np.diff(data.offsets)[order]
    items = np.concatenate([data.sequence(int(u)) for u in order]) if len(order) else np.zeros(0, np.int32)
    return UserHistories(
        user_ids=data.user_ids[order].astype(np.int64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        items=items.astype(np.int64),
    )


def load_model(model_uri: str, cfg: ServeConfig) -> LoadedModel:
    """Resolve, download and load `model_uri` (models:/name@alias, models:/name/3, runs:/.., path)."""
    from lmrec.tracking.mlflow_utils import download_model, resolve_model_version

    info = (
        resolve_model_version(model_uri, cfg.tracking_uri)
        if model_uri.startswith("models:/")
        else {"source": model_uri}
    )
    info["uri"] = model_uri
    local = download_model(info["source"] if info.get("version") else model_uri, uri=cfg.tracking_uri)
    model, vocab, meta = load_model_dir(local)
    fused = None
    if getattr(model, "fusion", None) is not None:
        # Served as the ID table that scores like it (one fused table, computed once); the fused
        # model stays to represent items added later by their content (lmrec.serving.catalog).
        from lmrec.models.seqrec import freeze_items

        fused, model = model, freeze_items(model)
    device = pick_device(cfg)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    model, dtype = _cast(model.eval(), cfg.precision, device)
    max_seq_len = int(model.config.max_seq_len) if hasattr(model, "config") else 50
    last_position = False
    if cfg.last_position_only:
        model, last_position = last_position_scoring(model, dtype, len(vocab), max_seq_len, device)
    forward, kind = trace_forward(model, _forward_mode(cfg, device), len(vocab), max_seq_len, device)
    version = f"{info['name']}/{info['version']}" if info.get("version") else Path(str(model_uri)).name
    loaded = LoadedModel(
        model=forward,
        item_ids=np.asarray(vocab, dtype=np.int64),
        version=version,
        info={**info, "dataset": meta.get("dataset"), "metrics": meta.get("metrics", {})},
        max_seq_len=max_seq_len,
        device=device,
        dtype=dtype,
        histories=load_histories(meta, cfg.data_dir),
        forward=kind,
        last_position_only=last_position,
    )
    if fused is None:
        return loaded
    from lmrec.serving.catalog import attach

    return attach(loaded, fused, model, meta, cfg, _forward_mode(cfg, device))


def _forward_mode(cfg: ServeConfig, device: torch.device) -> str:
    """auto: the trace on CPU (measured faster under load there); eager on GPU, where it is what was measured."""
    if cfg.forward == "auto":
        return "auto" if device.type == "cpu" else "eager"
    return cfg.forward


def history_key(user_id: int | None, history: Sequence[int] | None) -> str:
    """Cache key part for a request's context (user id, or a hash of the explicit history)."""
    if history is None:
        return f"u:{user_id}"
    import hashlib

    return "h:" + hashlib.blake2b(np.asarray(history, dtype=np.int64).tobytes(), digest_size=12).hexdigest()


def pad_id() -> int:
    return PAD_ID
