"""All quantization math, in one place: choose scales, quantize, dequantize (numpy, deterministic).

Symmetric per-row integer quantization with fp16 scales: for a row w and bit width b, qmax = 2^(b-1) - 1,
scale = fp16(clip / qmax) with clip = max|w| unless a clip is given, codes = clamp(round(w / scale), ±qmax).
Quantization divides by the *stored* fp16 scale, so dequantize(codes, scales) is exactly what the reader
rebuilds. Rows whose scale is zero (all-zero rows, or fp16 underflow) get zero codes. Must not import torch.
"""

from __future__ import annotations

import numpy as np

from packer.errors import QuantError

FP16_MAX = float(np.finfo(np.float16).max)


def qmax_for_bits(bits: int) -> int:
    if not 2 <= bits <= 8:
        raise QuantError(f"integer quantization supports 2..8 bits, got {bits}")
    return (1 << (bits - 1)) - 1


def scales_for_clip(clip: np.ndarray, bits: int) -> np.ndarray:
    """fp16 scales for per-row clip values (float array, >= 0)."""
    clip = np.asarray(clip, dtype=np.float32)
    raw = clip / np.float32(qmax_for_bits(bits))
    if not np.all(np.isfinite(raw)) or np.any(raw > FP16_MAX):
        raise QuantError(f"a row's scale {float(np.max(raw)):.4g} is not finite or exceeds fp16's range")
    return raw.astype(np.float16)


def quantize_with_scales(w: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """int8 codes for float rows w [R,C] with fp16 scales [R] (codes of zero-scale rows are 0)."""
    qmax = qmax_for_bits(bits)
    s = scales.astype(np.float32)[:, None]
    safe = np.where(s > 0, s, np.float32(1.0))
    codes = np.rint(w.astype(np.float32) / safe)
    codes = np.where(s > 0, codes, 0.0)
    return np.clip(codes, -qmax, qmax).astype(np.int8)


def quantize_rows(w: np.ndarray, bits: int, clip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric quantization of a 2-D float array: (codes int8 [R,C], scales fp16 [R])."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise QuantError(f"per-row quantization needs a 2-D tensor, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise QuantError("tensor holds NaN or infinite values; it cannot be quantized")
    if clip is None:
        clip = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scales = scales_for_clip(clip, bits)
    return quantize_with_scales(w, scales, bits), scales


def dequantize_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 [R,C] = codes * scale per row."""
    return codes.astype(np.float32) * scales.astype(np.float32)[:, None]
