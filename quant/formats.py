"""Tensor storage formats: how one float tensor becomes named arrays (sections) and back.

Each format name (packer.constants.TENSOR_FORMATS) parses to a FormatSpec; `encode` turns a tensor into
arrays with a given clip (scale) method, `decode` rebuilds the float tensor exactly as the reader does.
All math is quant.primitives; this module only parses names, reshapes and names arrays. Roles: `data` for
passthrough; `codes` (int8 [R,C]) and `scales` (fp16 [R] per row, [R,G] per group) for integer and ternary
formats; `codes` (uint8, two NF4 codes a byte) and `scales` (fp16 absmax per block) for NF4. NF4 encoding
calls bitsandbytes (imported only then); decoding needs only numpy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from packer import constants as C
from packer.errors import FormatError, QuantError
from quant import primitives as P

_INT = re.compile(r"int([3-8])_(?:row|g(\d+))")
_TERNARY = re.compile(r"ternary_(?:row|g(\d+))")
_NF4 = re.compile(r"nf4_g(\d+)")


@dataclass(frozen=True)
class FormatSpec:
    name: str
    kind: str                  # "float" | "int" (ternary is int with 2 bits) | "nf4"
    bits: int | None = None
    group: int | None = None   # values per scale within a row; None: one scale per row (NF4: block size)

    @property
    def ternary(self) -> bool:
        return self.kind == "int" and self.bits == 2


def spec(fmt: str) -> FormatSpec:
    if fmt not in C.TENSOR_FORMATS:
        raise QuantError(f"unknown tensor format {fmt!r}; known: {sorted(C.TENSOR_FORMATS)}")
    if fmt in ("fp32", "fp16", "bf16"):
        return FormatSpec(fmt, "float")
    if m := _INT.fullmatch(fmt):
        return FormatSpec(fmt, "int", int(m.group(1)), int(m.group(2)) if m.group(2) else None)
    if m := _TERNARY.fullmatch(fmt):
        return FormatSpec(fmt, "int", 2, int(m.group(1)) if m.group(1) else None)
    if m := _NF4.fullmatch(fmt):
        return FormatSpec(fmt, "nf4", 4, int(m.group(1)))
    raise QuantError(f"tensor format {fmt!r} is registered but has no parser in quant/formats.py")


@dataclass(frozen=True)
class Encoded:
    format: str
    arrays: dict[str, np.ndarray]
    bits: int | None = None
    scale: str | None = None     # how the scales were chosen (packer.constants.SCALE_METHODS); None: float


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def int_bits(fmt: str) -> int | None:
    """Bit width of an integer or ternary format, else None."""
    s = spec(fmt)
    return s.bits if s.kind == "int" else None


def as_rows(w: np.ndarray) -> np.ndarray:
    return w.reshape(1, -1) if w.ndim < 2 else w.reshape(w.shape[0], -1)


def methods_for(fmt: str) -> tuple[str, ...]:
    """Data-free scale methods a format supports (GPTQ, which needs a Hessian, comes on top for int kinds)."""
    s = spec(fmt)
    if s.kind == "float":
        return ()
    if s.kind == "nf4":
        return ("absmax",)
    if s.ternary:
        return ("absmean",)
    return ("absmax", "clip_search", "sdclip")


def clip_for(rows: np.ndarray, s: FormatSpec, method: str, weights: np.ndarray | None = None,
             sdclip_k: float | None = None, fractions=P.CLIP_FRACTIONS) -> np.ndarray:
    """The clip [R,G] a method picks for 2-D rows in an int (or ternary) format."""
    if method == "absmax":
        return P.absmax_clip(rows, s.group)
    if method == "absmean" and s.ternary:
        return P.absmean_clip(rows, s.group)
    if method == "clip_search" and not s.ternary:
        return P.clip_search(rows, s.bits, s.group, fractions, weights)
    if method == "sdclip" and not s.ternary:
        return P.sdclip_clip(rows, s.bits, s.group, sdclip_k)
    raise QuantError(f"scale method {method!r} does not apply to format {s.name!r}; it supports "
                     f"{list(methods_for(s.name))} (and gptq with calibration data)")


def from_codes(fmt: str, codes: np.ndarray, scales: np.ndarray, method: str) -> Encoded:
    """An integer-format Encoded from codes [R,C] and fp16 scales [R,G] (per-row formats store [R])."""
    s = spec(fmt)
    scales = np.asarray(scales, dtype=np.float16).reshape(codes.shape[0], -1)
    return Encoded(fmt, {"codes": np.ascontiguousarray(codes, dtype=np.int8),
                         "scales": scales[:, 0].copy() if s.group is None else scales}, s.bits, method)


def encode(w: np.ndarray, fmt: str, clip: np.ndarray | None = None, *, method: str | None = None,
           weights: np.ndarray | None = None, sdclip_k: float | None = None) -> Encoded:
    """Encode w in `fmt`. Integer formats take an explicit clip [R,G], or a method (default: absmax; ternary:
    absmean); `weights` [C] weight the clip search's squared error per column."""
    s = spec(fmt)
    w = np.asarray(w, dtype=np.float32)
    if s.kind == "float":
        if fmt == "fp32":
            return Encoded(fmt, {"data": w})
        if fmt == "fp16":
            if np.any(np.abs(w) > P.FP16_MAX):
                raise QuantError("tensor has values beyond fp16's range; use bf16 or fp32")
            return Encoded(fmt, {"data": w.astype(np.float16)})
        return Encoded(fmt, {"data": to_bf16_bits(w)})
    if s.kind == "nf4":
        return encode_nf4(w, s)
    rows = P.check_rows(as_rows(w))
    if clip is None:
        method = method or methods_for(fmt)[0]
        clip = clip_for(rows, s, method, weights, sdclip_k)
    codes, scales = P.quantize_groups(rows, s.bits, s.group, clip)
    return from_codes(fmt, codes, scales, method or "absmax")


def encode_nf4(w: np.ndarray, s: FormatSpec) -> Encoded:
    """NF4 through bitsandbytes (CPU): blocks of s.group values of the flattened tensor, fp16 absmax."""
    import bitsandbytes.functional as bnbf
    import torch

    flat = P.check_rows(w.reshape(1, -1))[0]
    if flat.size == 0:
        raise QuantError("NF4 needs at least one value")
    if np.abs(flat).max() > P.FP16_MAX:
        raise QuantError("tensor has values beyond fp16's range; NF4 stores fp16 block maxima")
    packed, state = bnbf.quantize_4bit(torch.from_numpy(flat.copy()), blocksize=s.group, quant_type="nf4")
    return Encoded(s.name, {"codes": packed.numpy().reshape(-1).copy(),
                            "scales": state.absmax.numpy().astype(np.float16)}, 4, "absmax")


def decode(fmt: str, arrays: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """float32 tensor of `shape` from a format's arrays (exactly what the reader rebuilds)."""
    s = spec(fmt)
    if fmt in ("fp32", "fp16"):
        return arrays["data"].astype(np.float32).reshape(shape)
    if fmt == "bf16":
        data = arrays["data"]
        return (data if data.dtype == np.float32 else from_bf16_bits(data)).reshape(shape)
    codes, scales = arrays["codes"], arrays["scales"]
    n = int(np.prod(shape))
    if s.kind == "nf4":
        want = ((n + 1) // 2,), (-(-n // s.group),)
    else:
        rows = 1 if len(shape) < 2 else shape[0]
        cols = n // rows if rows else 0
        want = (rows, cols), ((rows,) if s.group is None else (rows, P.n_groups(cols, s.group)))
    if tuple(codes.shape) != want[0] or tuple(scales.shape) != want[1]:
        raise FormatError(f"format {fmt} of a {list(shape)} tensor needs codes {list(want[0])} and scales "
                          f"{list(want[1])}, the sections hold {list(codes.shape)} and {list(scales.shape)}")
    if s.kind == "nf4":
        return P.nf4_dequantize(codes, scales, n, s.group).reshape(shape)
    return P.dequantize(codes, scales, s.group).reshape(shape)


def section_dtype(arr: np.ndarray, fmt: str, role: str) -> str:
    if fmt == "bf16" and role == "data":
        return "bfloat16"
    return {np.dtype(np.int8): "int8", np.dtype(np.float16): "float16", np.dtype(np.float32): "float32",
            np.dtype(np.uint8): "uint8"}[arr.dtype]
