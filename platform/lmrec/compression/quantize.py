"""Post-training quantization: dynamic int8 linear layers (CPU serving), fp16/bf16 weights (GPU).

`Int8Linear` keeps its weight as plain tensors, int8 values plus one fp32 scale per
output channel (symmetric, zero point 0), so it saves to safetensors and reloads
without pickle. `torch.ao.quantization.quantize_dynamic` keeps the weight in packed
fbgemm objects that only `torch.save` (pickle) can store, and torch 2.13 marks it
deprecated. Here only its kernel is used: on CPU the forward calls
`torch.ops.quantized.linear_dynamic` (activations quantized per call to uint8 with a
per-tensor range, int8 x int8 -> int32 GEMM, rescaled to fp32). The packed weight
is a cache rebuilt from the int8 tensors, so a reloaded model gives bit-identical
outputs. Where that kernel is missing (a future torch, another engine, a GPU) the
layer falls back to `x @ dequantized(W).T`: same weights, float arithmetic.

`torch._int_mm` and `torch._weight_int8pack_mm` were measured 50-100x slower than
fp32 GEMM on this AVX2 CPU (no VNNI), so they are not used.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from lmrec.models.seqrec import SeqRecModel

QMAX = 127  # symmetric int8 range [-127, 127]: -128 is never produced, so the range is sign-symmetric
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _kernel_available() -> bool:
    try:
        return hasattr(torch.ops.quantized, "linear_dynamic") and hasattr(torch.ops.quantized, "linear_prepack")
    except (AttributeError, RuntimeError):
        return False


class Int8Linear(nn.Module):
    """`y = x W^T + b` with W as int8 values times a per-output-channel fp32 scale.

    State (all safetensors-friendly): `weight_int8` (out, in) int8, `weight_scale`
    (out,) fp32, optional `bias` (out,) fp32. Activations are quantized dynamically
    at each call, so no calibration data is needed.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32))
        else:
            self.bias = None
        self._packed: object | None = None  # fbgemm/x86 packed weight, rebuilt from the buffers
        self._packed_key: tuple[int, ...] | None = None
        self._kernel_failed = False

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize a float Linear: scale_o = max_i |W[o, i]| / 127, q = round(W / scale)."""
        w = linear.weight.detach().float().cpu()
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / QMAX  # all-zero rows keep a tiny positive scale
        q = torch.round(w / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        out.weight_int8.copy_(q)
        out.weight_scale.copy_(scale)
        if linear.bias is not None:
            out.bias.copy_(linear.bias.detach().float().cpu())
        return out.to(linear.weight.device)

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) fp32 weight the int8 values stand for."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def _packed_weight(self) -> object:
        key = (
            self.weight_int8.data_ptr(),
            self.weight_int8._version,
            self.weight_scale.data_ptr(),
            self.weight_scale._version,
            -1 if self.bias is None else self.bias._version,
        )
        if self._packed is None or self._packed_key != key:
            with warnings.catch_warnings():  # quantized-tensor creation warns of its deprecation (pytorch#184982)
                warnings.simplefilter("ignore")
                qweight = torch._make_per_channel_quantized_tensor(
                    self.weight_int8, self.weight_scale.double(), torch.zeros(self.out_features, dtype=torch.long), 0
                )
                self._packed = torch.ops.quantized.linear_prepack(qweight, self.bias)
            self._packed_key = key
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_kernel = (
            x.device.type == "cpu" and x.dtype == torch.float32 and not self._kernel_failed and _kernel_available()
        )
        if use_kernel:
            try:
                flat = x.reshape(-1, self.in_features).contiguous()
                # reduce_range: 7-bit activations avoid int16 overflow in AVX2's u8*s8 pair sums,
                # as torch's own dynamic Linear does.
                y = torch.ops.quantized.linear_dynamic(flat, self._packed_weight(), True)
                return y.reshape(*x.shape[:-1], self.out_features)
            except RuntimeError:  # engine without per-channel dynamic linear: use the float path from now on
                self._kernel_failed = True
        w = self.dequantized_weight().to(x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8 per-channel"


def linear_module_names(model: SeqRecModel) -> list[str]:
    """Qualified names of the transformer blocks' projections (what int8 quantization replaces).

    The item-embedding table stays fp32: it is both the input lookup and the output
    scoring matrix, and full-catalog scores are sensitive to its precision.
    """
    return [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, (nn.Linear, Int8Linear)) and name.rsplit(".", 1)[-1] in LINEAR_NAMES
    ]


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def quantize_int8(model: SeqRecModel, names: Iterable[str] | None = None) -> SeqRecModel:
    """A copy of `model` (eval mode, CPU) whose block projections are `Int8Linear`."""
    out = copy.deepcopy(model).cpu().float().eval()
    for name in list(names) if names is not None else linear_module_names(out):
        lin = out.get_submodule(name)
        if not isinstance(lin, nn.Linear):
            raise TypeError(f"{name} is {type(lin).__name__}, not nn.Linear")
        _set_module(out, name, Int8Linear.from_linear(lin))
    return out


def int8_shell(model: SeqRecModel, names: Iterable[str]) -> SeqRecModel:
    """Replace `names` with empty `Int8Linear`s in place (to load saved int8 weights into)."""
    for name in names:
        lin = model.get_submodule(name)
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"{name} is {type(lin).__name__}, not a Linear that int8 weights can replace")
        _set_module(model, name, Int8Linear(lin.in_features, lin.out_features, bias=lin.bias is not None))
    return model


def int8_module_names(model: nn.Module) -> list[str]:
    return [name for name, mod in model.named_modules() if isinstance(mod, Int8Linear)]


def cast_weights(model: SeqRecModel, dtype: torch.dtype) -> SeqRecModel:
    """A copy with floating weights in `dtype` (fp16/bf16 for GPU serving).

    Rotary inverse frequencies stay fp32: HF Llama computes cos/sin from them in
    fp32 anyway, and rounding them to 16 bits would shift every position's angle.
    """
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"cast_weights: unsupported dtype {dtype}")
    out = copy.deepcopy(model).eval()
    keep = {name: buf.detach().clone() for name, buf in out.named_buffers() if name.endswith("inv_freq")}
    out = out.to(dtype)
    for name, buf in keep.items():
        _set_buffer(out, name, buf)
    return out


def _set_buffer(root: nn.Module, name: str, value: torch.Tensor) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    persistent = child not in getattr(parent, "_non_persistent_buffers_set", set())
    parent.register_buffer(child, value, persistent=persistent)


QUANT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def quantize(model: SeqRecModel, mode: str) -> SeqRecModel:
    """Apply quantization `mode` ("none" | "int8" | "fp16" | "bf16") to a copy of `model`."""
    if mode == "none":
        return copy.deepcopy(model).eval()
    if mode == "int8":
        return quantize_int8(model)
    if mode in QUANT_DTYPES:
        return cast_weights(model, QUANT_DTYPES[mode])
    raise ValueError(f"unknown quantization mode {mode!r}; choose none, int8, fp16 or bf16")
