"""Tensor storage formats: how one float tensor becomes named arrays (sections) and back.

Each format name (packer.constants.TENSOR_FORMATS) maps to an encoder and a decoder. Integer formats call
quant.primitives for all math; this module only reshapes and names arrays. Roles: `data` for passthrough,
`codes` (int8) and `scales` (fp16) for per-row integer formats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from packer import constants as C
from packer.errors import QuantError
from quant import primitives as P


@dataclass(frozen=True)
class Encoded:
    format: str
    arrays: dict[str, np.ndarray]
    bits: int | None = None


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def int_bits(fmt: str) -> int | None:
    """Bit width of an `int<b>_row` format, else None."""
    if fmt.startswith("int") and fmt.endswith("_row"):
        return int(fmt[3:-4])
    return None


def as_rows(w: np.ndarray) -> np.ndarray:
    return w.reshape(1, -1) if w.ndim < 2 else w.reshape(w.shape[0], -1)


def encode(w: np.ndarray, fmt: str, clip: np.ndarray | None = None) -> Encoded:
    if fmt not in C.TENSOR_FORMATS:
        raise QuantError(f"unknown tensor format {fmt!r}; known: {sorted(C.TENSOR_FORMATS)}")
    w = np.asarray(w, dtype=np.float32)
    if fmt == "fp32":
        return Encoded(fmt, {"data": w})
    if fmt == "fp16":
        if np.any(np.abs(w) > P.FP16_MAX):
            raise QuantError("tensor has values beyond fp16's range; use bf16 or fp32")
        return Encoded(fmt, {"data": w.astype(np.float16)})
    if fmt == "bf16":
        return Encoded(fmt, {"data": to_bf16_bits(w)})
    bits = int_bits(fmt)
    codes, scales = P.quantize_rows(as_rows(w), bits, clip)
    return Encoded(fmt, {"codes": codes, "scales": scales}, bits)


def decode(fmt: str, arrays: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """float32 tensor of `shape` from a format's arrays (exactly what the reader rebuilds)."""
    if fmt in ("fp32", "fp16"):
        return arrays["data"].astype(np.float32).reshape(shape)
    if fmt == "bf16":
        data = arrays["data"]
        return (data if data.dtype == np.float32 else from_bf16_bits(data)).reshape(shape)
    if int_bits(fmt) is None:
        raise QuantError(f"unknown tensor format {fmt!r}")
    return P.dequantize_rows(arrays["codes"], arrays["scales"]).reshape(shape)


def section_dtype(arr: np.ndarray, fmt: str, role: str) -> str:
    if fmt == "bf16" and role == "data":
        return "bfloat16"
    return {np.dtype(np.int8): "int8", np.dtype(np.float16): "float16", np.dtype(np.float32): "float32",
            np.dtype(np.uint8): "uint8"}[arr.dtype]
