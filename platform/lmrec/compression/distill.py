"""Knowledge distillation as a pluggable loss for `lmrec.training.loop` (`LossFn`).

The student learns from a frozen teacher's soft targets over the item catalog
(Hinton et al., "Distilling the Knowledge in a Neural Network", 2015):

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(student)

at every non-pad position, where s and t are the student's and the teacher's
logits (dot products divided by each model's own `config.temperature`, i.e. the
logits each model was trained with). T^2 keeps the soft term's gradient scale
independent of T. CE(student) is the student's own training objective (full or
sampled softmax), computed exactly as `default_loss` does; with alpha = 0 the
loss *is* `default_loss`, so the teacher is not even run.

Teacher logits come from one of:
- an online teacher module, in eval mode and under no_grad, replicated on every
  rank (or FSDP-sharded by the caller with `lmrec.training.sharding.wrap_model`:
  every rank calls it in lockstep, which the training loop guarantees);
- a `TeacherTopK` table precomputed once: the teacher's k largest logits at every
  position of every training row, so workers need neither the teacher nor
  (n, catalog) teacher logits. The KL is then taken over those k items, both
  distributions renormalised over them.

Works with an FSDP2 or DDP student: everything touching student parameters runs
inside the student's `forward` through its `head` hook, where FSDP has gathered
them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmrec.ids import PAD_ID
from lmrec.models.seqrec import SeqRecModel

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # same as lmrec.training.steps.LossFn
TOPK_FORMAT = "lmrec-teacher-topk"


def plain_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The model's own training loss (identical to `lmrec.training.steps.default_loss`)."""
    return model(inputs, targets=targets)


def _seqrec(module: nn.Module) -> SeqRecModel:
    inner = getattr(module, "module", module)  # DDP wraps; FSDP2 shards in place
    if not isinstance(inner, SeqRecModel):
        raise TypeError(f"expected a SeqRecModel (possibly wrapped), got {type(inner).__name__}")
    return inner


def soft_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of KL(softmax(t/T) || softmax(s/T)); rows are positions, columns items."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def _logits_at(valid: torch.Tensor) -> Callable[[SeqRecModel, torch.Tensor], torch.Tensor]:
    """Forward head: (n, catalog + 1) logits at the `valid` positions, pad column -inf."""

    def head(m: SeqRecModel, hidden: torch.Tensor) -> torch.Tensor:
        logits = (hidden[valid] @ m.item_embeddings.T) / m.config.temperature
        logits[:, PAD_ID] = float("-inf")
        return logits.float()

    return head


def _topk_head(k: int) -> Callable[[SeqRecModel, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Forward head: the k largest logits (B, L, k) and their item ids at every position."""

    def head(m: SeqRecModel, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = (hidden @ m.item_embeddings.T) / m.config.temperature
        logits[..., PAD_ID] = float("-inf")
        vals, idx = logits.float().topk(k, dim=-1)
        return vals, idx

    return head  # type: ignore[return-value]


# ---------------------------------------------------------------- precomputed top-k


def _row_key(row: np.ndarray) -> bytes:
    """Lookup key of a left-padded input row: its non-pad suffix (identical prefixes give identical teacher outputs)."""
    nz = np.flatnonzero(row != PAD_ID)
    return row[nz[0] :].astype(np.int64).tobytes() if len(nz) else b""


@dataclass
class TeacherTopK:
    """The teacher's top-k logits at every position of a set of (left-padded) training rows.

    `values[i, j]` / `indices[i, j]` belong to position j of `inputs[i]`; rows are
    right-aligned like the inputs, so a batch trimmed to its last W columns looks
    up the last W positions. Stored as safetensors (never pickle).
    """

    inputs: np.ndarray  # (N, L) int64 item ids, left-padded
    values: torch.Tensor  # (N, L, k) teacher logits (already divided by the teacher's temperature)
    indices: torch.Tensor  # (N, L, k) int32 item ids
    num_items: int

    def __post_init__(self) -> None:
        self._index = {_row_key(r): i for i, r in enumerate(self.inputs)}

    @property
    def k(self) -> int:
        return int(self.values.shape[-1])

    @property
    def max_len(self) -> int:
        return int(self.inputs.shape[1])

    def nbytes(self) -> int:
        return int(
            self.values.numel() * self.values.element_size() + self.indices.numel() * self.indices.element_size()
        )

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        teacher: nn.Module,
        inputs: np.ndarray,
        k: int,
        batch_size: int = 128,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float16,
    ) -> TeacherTopK:
        """Run the teacher over `inputs` (N, L) once; fp16 values halve the table (logits are O(10))."""
        inner = _seqrec(teacher)
        if not 1 <= k <= inner.config.num_items:
            raise ValueError(f"k must be in [1, {inner.config.num_items}], got {k}")
        was_training = teacher.training
        teacher.eval()
        vals, idxs = [], []
        head = _topk_head(k)
        for start in range(0, len(inputs), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_size])).long().to(device)
            v, i = teacher(x, head=head)
            vals.append(v.to("cpu", dtype))
            idxs.append(i.to("cpu", torch.int32))
        teacher.train(was_training)
        return cls(np.asarray(inputs, dtype=np.int64), torch.cat(vals), torch.cat(idxs), inner.config.num_items)

    def lookup(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (B, W, k) fp32, indices (B, W, k) int64) for a (B, W) batch of training rows."""
        rows = inputs.detach().cpu().numpy()
        width = rows.shape[1]
        if width > self.max_len:
            raise ValueError(f"batch width {width} exceeds the table's max_len {self.max_len}")
        try:
            pos = [self._index[_row_key(r)] for r in rows]
        except KeyError as exc:
            raise KeyError(
                "an input row is not in the precomputed teacher table: build it from the same "
                "train_examples(data, max_len, sliding_window) the training loop uses"
            ) from exc
        sel = torch.as_tensor(pos, dtype=torch.long)
        vals = self.values[sel, self.max_len - width :].float()
        idx = self.indices[sel, self.max_len - width :].long()
        return vals.to(inputs.device), idx.to(inputs.device)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "inputs": torch.from_numpy(self.inputs).contiguous(),
                "values": self.values.contiguous(),
                "indices": self.indices.contiguous(),
            },
            str(path),
            metadata={"format": TOPK_FORMAT, "num_items": str(self.num_items)},
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> TeacherTopK:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != TOPK_FORMAT:
                raise ValueError(f"{path}: not a {TOPK_FORMAT} file (format {meta.get('format')!r})")
            t = {key: fh.get_tensor(key) for key in fh.keys()}
        return cls(t["inputs"].numpy(), t["values"], t["indices"], int(meta["num_items"]))


# ---------------------------------------------------------------- the loss


def distillation_loss(
    teacher: nn.Module | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    topk: int = 0,
    table: TeacherTopK | None = None,
) -> LossFn:
    """A `LossFn` mixing the student's own loss with KL to the teacher's soft targets.

    `teacher`: frozen teacher (its parameters get requires_grad=False; it is put in
    eval mode on every call). `topk` > 0 restricts the KL to the teacher's k best
    items at each position (online); `table` supplies precomputed top-k instead of
    a teacher. alpha = 0 returns the plain loss (no teacher needed).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 0.0:
        return plain_loss
    if (teacher is None) == (table is None):
        raise ValueError("give exactly one of `teacher` (online) or `table` (precomputed top-k)")
    if topk < 0:
        raise ValueError(f"topk must be >= 0, got {topk}")
    teacher_items = table.num_items if table is not None else _seqrec(teacher).config.num_items
    if teacher is not None:
        for p in teacher.parameters():
            p.requires_grad_(False)
    t2 = temperature * temperature

    def loss_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        valid = targets != PAD_ID
        t_full: torch.Tensor | None = None
        t_vals: torch.Tensor | None = None
        t_idx: torch.Tensor | None = None
        if table is not None:
            vals, idx = table.lookup(inputs)
            t_vals, t_idx = vals[valid], idx[valid]
        else:
            assert teacher is not None
            teacher.eval()
            with torch.no_grad():
                t_full = teacher(inputs, head=_logits_at(valid))
            if topk:
                t_vals, t_idx = t_full.topk(topk, dim=-1)

        def head(m: SeqRecModel, hidden: torch.Tensor) -> torch.Tensor:
            cfg = m.config
            if cfg.num_items != teacher_items:
                raise ValueError(f"student catalog has {cfg.num_items} items, teacher {teacher_items}")
            table_w = m.item_embeddings
            h, t = hidden[valid], targets[valid]
            logits: torch.Tensor | None = None
            if cfg.loss == "full":  # the same operations as SeqRecModel._loss, sharing the logits with the KL
                logits = (h @ table_w.T) / cfg.temperature
                logits[:, PAD_ID] = float("-inf")
                hard = F.cross_entropy(logits, t)
            else:
                hard = m._loss(hidden, targets)
            if t_idx is not None and t_vals is not None:  # KL over the teacher's top-k items only
                s_k = torch.einsum("nh,nkh->nk", h, table_w[t_idx]) / cfg.temperature
                soft = soft_kl(t_vals, s_k, temperature)
            else:
                assert t_full is not None
                if logits is None:
                    logits = (h @ table_w.T) / cfg.temperature
                soft = soft_kl(t_full[:, 1:], logits[:, 1:], temperature)  # column 0 is padding (-inf in both)
            return alpha * t2 * soft + (1.0 - alpha) * hard

        return model(inputs, head=head)

    return loss_fn


def check_teacher_catalog(
    teacher_num_items: int,
    dataset_num_items: int,
    teacher_items: list[int] | None = None,
    dataset_items: list[int] | None = None,
) -> None:
    """Raise ValueError unless teacher and dataset index the same catalog (count and, if given, ids)."""
    if teacher_num_items != dataset_num_items:
        raise ValueError(
            f"teacher catalog has {teacher_num_items} items but the dataset has {dataset_num_items}: "
            "distillation needs the teacher trained on the same prepared dataset"
        )
    if teacher_items is not None and dataset_items is not None and list(teacher_items) != list(dataset_items):
        raise ValueError("teacher vocabulary differs from the dataset's item ids (same size, different items)")
