"""Tensor storage formats as a registry: one registered definition per format name.

A format (FORMAT.md "Tensor formats") is one `TensorFormat` instance registered under the name the manifest
records: its parameters (bits, group size), the arrays it stores (roles with their element types and shapes),
how a float tensor becomes those arrays (`encode`, with a data-free scale method or an explicit clip), how
they become the float tensor again exactly as the reader rebuilds it (`decode`), the scale methods that
apply (`methods`), and its slow reference decoder (`reference_decode`, quant/reference.py, for tests).
Three kinds are defined here: float passthrough (fp32, fp16, bf16), symmetric integers with fp16 scales per
row or per group (int3..int8, and ternary as 2 bits), and NF4 blocks. Adding a format is one `register`
call here, its name in packer.constants.TENSOR_FORMATS (the reader's list, part of the file format; a test
keeps both in step) and its row in FORMAT.md.
All arithmetic is quant.primitives (NF4 included: bitsandbytes' code book and encoder, restated in numpy and
checked against bitsandbytes bit for bit); numpy only. Must not import torch at module level, read files, or choose among formats (quant/candidates.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import FormatError, QuantError, ScaleError
from packer import constants as C
from quant import primitives as P


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


def as_rows(w: np.ndarray) -> np.ndarray:
    """The [R, C] view every row/group format takes: R = shape[0] rows (a 1-D tensor is one row)."""
    return w.reshape(1, -1) if w.ndim < 2 else w.reshape(w.shape[0], -1)


_SECTION_DTYPES = {np.dtype(np.int8): "int8", np.dtype(np.float16): "float16", np.dtype(np.float32): "float32",
                   np.dtype(np.uint8): "uint8"}


class TensorFormat:
    """Base of every registered format. Subclasses set the class attributes and implement the methods."""

    name: str
    bits: int | None = None       # bits per stored value (None: float passthrough)
    group: int | None = None      # values per scale within a row (NF4: per block of the flat tensor)
    is_float = False              # stored as floats, no codes or scales
    uses_gptq = False             # integer codes on a fixed scale grid: GPTQ can choose them
    scale_methods: tuple[str, ...] = ()   # data-free scale methods (GPTQ, which needs a Hessian, on top)

    @property
    def nominal_bits(self) -> int:
        """Bits per value for the planner's uniform starts (float passthrough: its width)."""
        return self.bits or 16

    def methods(self, has_hessian: bool = False) -> tuple[str, ...]:
        """Scale methods that can encode this format: the data-free ones, then gptq given a Hessian."""
        return self.scale_methods + (("gptq",) if has_hessian and self.uses_gptq else ())

    def applies(self, w: np.ndarray) -> bool:
        """Whether this format is a valid, distinct choice for w."""
        return np.asarray(w).size > 0

    def encode(self, w: np.ndarray, method: str | None = None, *, clip: np.ndarray | None = None,
               weights: np.ndarray | None = None, sdclip_k: float | None = None) -> Encoded:
        raise NotImplementedError

    def decode(self, arrays: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """float32 tensor of `shape` (exactly what the reader rebuilds); FormatError on malformed arrays."""
        raise NotImplementedError

    def reference_decode(self, arrays: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """decode() restated by quant/reference.py, one value at a time (tests compare them bit for bit)."""
        raise NotImplementedError

    def section_dtype(self, role: str, arr: np.ndarray) -> str:
        """The element type a role's section declares (packer.constants.DTYPES)."""
        return _SECTION_DTYPES[arr.dtype]


class FloatFormat(TensorFormat):
    """Passthrough: one `data` section in float32, float16 or bfloat16 (stored as its 16-bit pattern)."""

    is_float = True

    def __init__(self, name: str, width: int) -> None:
        self.name, self.width = name, width

    @property
    def nominal_bits(self) -> int:
        return self.width

    def applies(self, w: np.ndarray) -> bool:
        if self.name == "fp16":
            return bool(np.all(np.abs(w) <= P.FP16_MAX))
        return np.asarray(w).size > 0

    def encode(self, w, method=None, *, clip=None, weights=None, sdclip_k=None) -> Encoded:
        w = np.asarray(w, dtype=np.float32)
        if self.name == "fp32":
            return Encoded(self.name, {"data": w})
        if self.name == "fp16":
            if np.any(np.abs(w) > P.FP16_MAX):
                raise QuantError("tensor has values beyond fp16's range; use bf16 or fp32")
            return Encoded(self.name, {"data": w.astype(np.float16)})
        return Encoded(self.name, {"data": to_bf16_bits(w)})

    def decode(self, arrays, shape) -> np.ndarray:
        data = arrays["data"]
        if self.name == "bf16" and data.dtype != np.float32:
            data = from_bf16_bits(data)
        if data.size != int(np.prod(shape)):
            raise FormatError(f"format {self.name} of a {list(shape)} tensor needs {int(np.prod(shape))} values, "
                              f"its data section holds {data.size}")
        return data.astype(np.float32).reshape(shape)

    def reference_decode(self, arrays, shape) -> np.ndarray:
        return self.decode(arrays, shape)          # a passthrough has no arithmetic to restate

    def section_dtype(self, role: str, arr: np.ndarray) -> str:
        return "bfloat16" if self.name == "bf16" else super().section_dtype(role, arr)


def _check_scales(scales: np.ndarray, fmt: str) -> None:
    """ScaleError when a stored scale is NaN or infinite (a hostile file; no encoder writes one)."""
    bad = ~np.isfinite(np.asarray(scales, dtype=np.float32))
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        value = float(np.asarray(scales, dtype=np.float32)[at])
        raise ScaleError(f"format {fmt}: scale {list(at)} is {value} ({int(bad.sum())} of {bad.size} scales are "
                         f"not finite); the file is damaged or crafted")


class IntFormat(TensorFormat):
    """Symmetric integers: `codes` int8 [R, C] in +-(2^(b-1)-1) and fp16 `scales` [R] (per row) or [R, G]."""

    uses_gptq = True

    def __init__(self, bits: int, group: int | None) -> None:
        self.bits, self.group = bits, group
        kind = "ternary" if bits == 2 else f"int{bits}"
        self.name = f"{kind}_{'row' if group is None else f'g{group}'}"
        self.scale_methods = ("absmean",) if self.ternary else ("absmax", "clip_search", "sdclip")

    @property
    def ternary(self) -> bool:
        return self.bits == 2

    def applies(self, w: np.ndarray) -> bool:
        rows = as_rows(np.asarray(w))
        if self.group is not None and self.group >= rows.shape[1]:
            return False                   # one group spans the row: the same as the per-row format
        return rows.size > 0

    def clip(self, rows: np.ndarray, method: str, weights: np.ndarray | None = None,
             sdclip_k: float | None = None, fractions=P.CLIP_FRACTIONS) -> np.ndarray:
        """The clip [R, G] a data-free scale method picks for 2-D rows."""
        if method == "absmax":
            return P.absmax_clip(rows, self.group)
        if method == "absmean" and self.ternary:
            return P.absmean_clip(rows, self.group)
        if method == "clip_search" and not self.ternary:
            return P.clip_search(rows, self.bits, self.group, fractions, weights)
        if method == "sdclip" and not self.ternary:
            return P.sdclip_clip(rows, self.bits, self.group, sdclip_k)
        raise QuantError(f"scale method {method!r} does not apply to format {self.name!r}; it supports "
                         f"{list(self.scale_methods)} (and gptq with calibration data)")

    def gptq_start_clips(self, rows: np.ndarray, searched) -> dict[str, np.ndarray]:
        """The scale sources GPTQ starts from, by variant name: ternary's absmean, or the row/group maximum and
        the clip searches `searched(grid)` over quant.candidates' grids."""
        if self.ternary:
            return {"absmean": P.absmean_clip(rows, self.group)}
        return {"absmax": P.absmax_clip(rows, self.group), **searched()}

    def from_codes(self, codes: np.ndarray, scales: np.ndarray, method: str) -> Encoded:
        """An Encoded from codes [R, C] and fp16 scales [R, G] (per-row formats store [R])."""
        scales = np.asarray(scales, dtype=np.float16).reshape(codes.shape[0], -1)
        return Encoded(self.name, {"codes": np.ascontiguousarray(codes, dtype=np.int8),
                                   "scales": scales[:, 0].copy() if self.group is None else scales},
                       self.bits, method)

    def encode(self, w, method=None, *, clip=None, weights=None, sdclip_k=None) -> Encoded:
        rows = P.check_rows(as_rows(np.asarray(w, dtype=np.float32)))
        if clip is None:
            method = method or self.scale_methods[0]
            clip = self.clip(rows, method, weights, sdclip_k)
        codes, scales = P.quantize_groups(rows, self.bits, self.group, clip)
        return self.from_codes(codes, scales, method or "absmax")

    def _arrays(self, arrays, shape) -> tuple[np.ndarray, np.ndarray]:
        codes, scales = arrays["codes"], arrays["scales"]
        n = int(np.prod(shape))
        rows = 1 if len(shape) < 2 else shape[0]
        cols = n // rows if rows else 0
        want = (rows, cols), ((rows,) if self.group is None else (rows, P.n_groups(cols, self.group)))
        if tuple(codes.shape) != want[0] or tuple(scales.shape) != want[1]:
            raise FormatError(f"format {self.name} of a {list(shape)} tensor needs codes {list(want[0])} and "
                              f"scales {list(want[1])}, the sections hold {list(codes.shape)} and "
                              f"{list(scales.shape)}")
        _check_scales(scales, self.name)
        return codes, scales

    def decode(self, arrays, shape) -> np.ndarray:
        codes, scales = self._arrays(arrays, shape)
        return P.dequantize(codes, scales, self.group).reshape(shape)

    def reference_decode(self, arrays, shape) -> np.ndarray:
        from quant import reference as R  # here, so the runtime bundle never carries the slow reference

        codes, scales = self._arrays(arrays, shape)
        return R.dequantize(codes, np.asarray(scales).reshape(codes.shape[0], -1), self.group).reshape(shape)


class NF4Format(TensorFormat):
    """bitsandbytes' NormalFloat4: `codes` uint8 [ceil(N/2)] (high nibble first), fp16 absmax `scales` per block
    of `group` values of the flattened tensor."""

    bits = 4
    scale_methods = ("absmax",)

    def __init__(self, group: int) -> None:
        self.group, self.name = group, f"nf4_g{group}"

    def applies(self, w: np.ndarray) -> bool:
        return bool(np.all(np.abs(w) <= P.FP16_MAX))

    def encode(self, w, method=None, *, clip=None, weights=None, sdclip_k=None) -> Encoded:
        flat = P.check_rows(np.asarray(w, dtype=np.float32).reshape(1, -1))[0]
        if flat.size == 0:
            raise QuantError("NF4 needs at least one value")
        if np.abs(flat).max() > P.FP16_MAX:
            raise QuantError("tensor has values beyond fp16's range; NF4 stores fp16 block maxima")
        packed, absmax = P.nf4_quantize(flat, self.group)
        return Encoded(self.name, {"codes": packed, "scales": absmax.astype(np.float16)}, 4, "absmax")

    def _arrays(self, arrays, shape) -> tuple[np.ndarray, np.ndarray, int]:
        codes, scales = arrays["codes"], arrays["scales"]
        n = int(np.prod(shape))
        want = ((n + 1) // 2,), (-(-n // self.group),)
        if tuple(codes.shape) != want[0] or tuple(scales.shape) != want[1]:
            raise FormatError(f"format {self.name} of a {list(shape)} tensor needs codes {list(want[0])} and "
                              f"scales {list(want[1])}, the sections hold {list(codes.shape)} and "
                              f"{list(scales.shape)}")
        _check_scales(scales, self.name)
        return codes, scales, n

    def decode(self, arrays, shape) -> np.ndarray:
        codes, scales, n = self._arrays(arrays, shape)
        return P.nf4_dequantize(codes, scales, n, self.group).reshape(shape)

    def reference_decode(self, arrays, shape) -> np.ndarray:
        from quant import reference as R  # here, so the runtime bundle never carries the slow reference

        codes, scales, n = self._arrays(arrays, shape)
        return R.nf4_decode(codes, scales, n, self.group, P.NF4_CODE).reshape(shape)


_REGISTRY: dict[str, TensorFormat] = {}


def register(fmt: TensorFormat) -> TensorFormat:
    """Add a format under its name (once); the reader accepts it when packer.constants lists the name."""
    if fmt.name in _REGISTRY:
        raise QuantError(f"tensor format {fmt.name!r} is registered twice")
    _REGISTRY[fmt.name] = fmt
    return fmt


def get(name: str) -> TensorFormat:
    """The registered format, or QuantError naming the known ones."""
    fmt = _REGISTRY.get(name) if isinstance(name, str) else None
    if fmt is None or name not in C.TENSOR_FORMATS:
        raise QuantError(f"unknown tensor format {name!r}; known: {sorted(_REGISTRY)}")
    return fmt


def names() -> list[str]:
    return sorted(_REGISTRY)


for _name, _width in (("fp32", 32), ("fp16", 16), ("bf16", 16)):
    register(FloatFormat(_name, _width))
for _bits in (8, 7, 6, 5, 4, 3, 2):
    for _group in (None, *C.GROUP_SIZES):
        register(IntFormat(_bits, _group))
for _group in C.GROUP_SIZES:
    register(NF4Format(_group))


# --- by name, for callers holding a manifest's format string ----------------------------------------------------
def encode(w: np.ndarray, fmt: str, clip: np.ndarray | None = None, *, method: str | None = None,
           weights: np.ndarray | None = None, sdclip_k: float | None = None) -> Encoded:
    """Encode w in `fmt`: integer formats take an explicit clip [R, G] or a method (default: the format's
    first data-free method); `weights` [C] weight the clip search's squared error per column."""
    return get(fmt).encode(w, method, clip=clip, weights=weights, sdclip_k=sdclip_k)


def decode(fmt: str, arrays: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """float32 tensor of `shape` from a format's arrays (exactly what the reader rebuilds)."""
    return get(fmt).decode(arrays, shape)
