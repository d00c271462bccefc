"""The "ans" section codec: section bytes and params onto a code matrix, coded by packer/entropy/models.py.

Owns how a section's raw bytes and params map onto a code matrix: int8 sections with
params {"dtype": "int8", "shape": [rows, ...], "bits": b} are coded as a [rows, cols] matrix of codes in
[-(2^(b-1)-1), 2^(b-1)-1]; any other dtype is coded as byte planes (one row per byte of the element, so an
fp16 scale's high and low bytes get their own statistics). Option {"prefer": "speed" | "size"} for "ans"
codes: "speed" (the default) is the grid model fitted in one pass (tens of millions of codes per second
both ways); "size" also tries every older model and keeps the smallest blob (slower to encode, and slower
to decode when a parametric model wins). Byte planes always use categorical tables. packer/codecs.py
registers these functions. Must not import torch.
"""

from __future__ import annotations

import math

import numpy as np

from common.errors import CodecError
from packer.entropy import models as em

DTYPE_BYTES = {"int8": 1, "uint8": 1, "float16": 2, "bfloat16": 2, "float32": 4}


def _elements(params: dict, what: str) -> int | None:
    shape = params.get("shape")
    if shape is None:
        return None
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CodecError(f"{what}: params shape {shape!r} must be a list of non-negative integers")
    return math.prod(shape)


def layout(raw_len: int, params: dict) -> tuple[int, int, tuple[int, int], bool]:
    """(rows, cols, code bounds, is_codes) of the matrix a section of raw_len bytes is coded as."""
    dtype = params.get("dtype", "uint8")
    if dtype not in DTYPE_BYTES:
        raise CodecError(f"ans: params dtype {dtype!r} is not one of {sorted(DTYPE_BYTES)}")
    n = _elements(params, "ans")
    size = DTYPE_BYTES[dtype]
    if n is not None and n * size != raw_len:
        raise CodecError(f"ans: params shape {params.get('shape')} of {dtype} is {n * size} bytes, "
                         f"but the section holds {raw_len}")
    if dtype != "int8":
        return size, raw_len // size, (-128, 127), False
    bits = params.get("bits", 8)
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise CodecError(f"ans: params bits={bits!r}; quantized codes have 2..8 bits (2 = ternary)")
    qmax = (1 << (bits - 1)) - 1
    shape = params.get("shape") or [raw_len]
    rows = shape[0] if len(shape) >= 2 else 1
    return rows, (raw_len // rows if rows else 0), (-qmax, qmax), True


def _to_matrix(raw: bytes, params: dict) -> tuple[np.ndarray, tuple[int, int]]:
    rows, cols, bounds, is_codes = layout(len(raw), params)
    buf = np.frombuffer(bytes(raw), dtype=np.uint8)
    if is_codes:
        X = buf.view(np.int8).reshape(rows, cols)
        if X.size and (int(X.min()) < bounds[0] or int(X.max()) > bounds[1]):
            raise CodecError(f"ans: codes span [{X.min()}, {X.max()}] but bits={params.get('bits', 8)} allows "
                             f"{list(bounds)}; quantize with the declared width")
        return X, bounds
    planes = buf.reshape(cols, rows).T.astype(np.int16) - 128
    return np.ascontiguousarray(planes.astype(np.int8)), bounds


def _from_matrix(X: np.ndarray, params: dict) -> bytes:
    if params.get("dtype", "uint8") == "int8":
        return X.astype(np.int8).tobytes()
    return (X.astype(np.int16) + 128).astype(np.uint8).T.tobytes()


def ans_encode(raw: bytes, params: dict) -> bytes:
    X, _ = _to_matrix(raw, params)
    prefer = params.get("prefer", "speed")
    if prefer not in em.PREFER:
        raise CodecError(f"ans option prefer={prefer!r}; use one of {em.PREFER}")
    if params.get("dtype", "uint8") != "int8":
        return em.encode_planes(X)           # bytes of floats: models of codes do not apply
    return em.encode_codes(X, prefer)


def ans_decode(stored: bytes, raw_len: int, params: dict) -> bytes:
    rows, cols, bounds, _ = layout(raw_len, params)
    X = em.decode_codes(bytes(stored), rows, cols, bounds, what=f"ans section ({rows}x{cols})")
    return _from_matrix(X, params)


def describe(stored: bytes, params: dict, raw_len: int | None = None) -> dict:
    """{'model', 'model_bytes', 'header_bytes', 'side_bits'} of an ANS section (model_bytes: histograms and
    parameters, counted inside the section's stored bytes)."""
    if raw_len is None:
        n = _elements(params, "ans")
        if n is None:
            raise CodecError("describe: params carry no shape; pass raw_len")
        raw_len = n * DTYPE_BYTES.get(params.get("dtype", "uint8"), 1)
    rows, cols, bounds, _ = layout(raw_len, params)
    return em.describe_codes(bytes(stored), rows, cols, bounds)


def describe_section(codec: str, stored: bytes, params: dict, raw_len: int | None = None) -> dict:
    """describe() for "ans" sections; other codecs keep no separable model: model_bytes None."""
    if codec == "ans":
        return describe(stored, params, raw_len)
    return {"model": codec, "model_bytes": None, "header_bytes": None, "side_bits": None}
