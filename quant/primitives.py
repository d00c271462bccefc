"""All quantization math, in one place: choose scales, quantize, dequantize (numpy, deterministic).

Symmetric integer quantization with fp16 scales, per row or per group of `group` consecutive values of a row
(a row's last group may be shorter). For b bits qmax = 2^(b-1) - 1 (b = 2 is ternary, qmax = 1);
scale = fp16(clip / qmax); codes = clamp(rint(w / scale), +-qmax), dividing by the *stored* fp16 scale, so
dequantize(codes, scales) is exactly what the reader rebuilds. Zero scales (all-zero groups, fp16
underflow) give zero codes. Clip choices: absmax (round to nearest at the group's max |w|), clip search
(the fraction of the max with the least, optionally column-weighted, squared error), SDClip
(min(k * std, absmax)), absmean (ternary, BitNet b1.58). NF4: bitsandbytes' code book, two 4-bit codes per
byte (high nibble first), one fp16 absmax per block of the flattened tensor; encoding reproduces bitsandbytes'
quantize_4bit bit for bit (a test compares them), decoding is bitsandbytes' dequantization. quant/reference.py restates every function slowly; tests compare.
Must not import torch.
"""

from __future__ import annotations

import numpy as np

from common.errors import QuantError

FP16_MAX = float(np.finfo(np.float16).max)
# bitsandbytes' NF4 code book (bitsandbytes.functional.get_4bit_type("nf4")); a test checks it against bnb.
NF4_CODE = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                     -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                     0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                     0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
CLIP_FRACTIONS = tuple(round(0.5 + 0.01 * i, 2) for i in range(51))      # 0.50, 0.51, ..., 1.00
# SDClip's default k per bit width: the MSE-optimal clip / std of a Gaussian for 2^b - 1 uniform levels.
SDCLIP_K = {2: 1.2, 3: 2.0, 4: 2.5, 5: 2.9, 6: 3.3, 7: 3.6, 8: 3.9}


def qmax_for_bits(bits: int) -> int:
    if not 2 <= bits <= 8:
        raise QuantError(f"integer quantization supports 2..8 bits (2 = ternary), got {bits}")
    return (1 << (bits - 1)) - 1


def n_groups(cols: int, group: int | None) -> int:
    """Scales per row: 1 per row (group None), else ceil(cols / group)."""
    if group is None:
        return 1
    if group <= 0:
        raise QuantError(f"group size must be positive, got {group}")
    return -(-cols // group)


def group_reduce(x: np.ndarray, group: int | None, fn) -> np.ndarray:
    """fn (np.max, np.sum, ...) over each group of each row of x [R, C] -> [R, G]; groups are contiguous."""
    R, C = x.shape
    G = n_groups(C, group)
    if C == 0:
        return np.zeros((R, G), dtype=x.dtype)
    if group is None or group >= C:
        return fn(x, axis=1)[:, None]
    full = C // group * group
    parts = []
    if full:
        parts.append(fn(np.ascontiguousarray(x[:, :full]).reshape(R, full // group, group), axis=2))
    if full < C:
        parts.append(fn(np.ascontiguousarray(x[:, full:]), axis=1)[:, None])
    return np.concatenate(parts, axis=1)


def group_counts(cols: int, group: int | None) -> np.ndarray:
    """Values in each group of a row: [G] int."""
    G = n_groups(cols, group)
    if group is None:
        return np.array([cols], dtype=np.int64)
    return np.array([min(group, cols - g * group) for g in range(G)], dtype=np.int64)


def expand_scales(scales: np.ndarray, cols: int, group: int | None) -> np.ndarray:
    """float32 per-value scales broadcastable to [R, cols] from fp16 scales [R] or [R, G]."""
    s = np.asarray(scales).astype(np.float32).reshape(len(scales), -1)
    if group is None:
        return s[:, :1]
    return np.repeat(s, group, axis=1)[:, :cols]


def scales_for_clip(clip: np.ndarray, bits: int) -> np.ndarray:
    """fp16 scales for clip values (float array of any shape, >= 0)."""
    clip = np.asarray(clip, dtype=np.float32)
    raw = clip / np.float32(qmax_for_bits(bits))
    if not np.all(np.isfinite(raw)) or np.any(raw > FP16_MAX):
        raise QuantError(f"a scale {float(np.max(raw)):.4g} is not finite or exceeds fp16's range")
    return raw.astype(np.float16)


def round_codes(w: np.ndarray, s: np.ndarray, qmax) -> np.ndarray:
    """The rounding rule: int8 clamp(rint(w / s), +-qmax) for float32 scales s broadcast against w (0 where s = 0);
    qmax is one bound, or one per value (broadcast against w)."""
    safe = np.where(s > 0, s, np.float32(1.0))
    codes = np.rint(np.asarray(w, dtype=np.float32) / safe)
    codes = np.where(s > 0, codes, 0.0)
    return np.clip(codes, -qmax, qmax).astype(np.int8)


def quantize_with_scales(w: np.ndarray, scales: np.ndarray, bits: int, group: int | None = None) -> np.ndarray:
    """int8 codes for float rows w [R,C] with fp16 scales [R] or [R,G] (codes of zero-scale groups are 0)."""
    return round_codes(w, expand_scales(scales, w.shape[1], group), qmax_for_bits(bits))


def scale_codes(codes: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The value rule: float32 codes x float32 scales s broadcast against codes."""
    return codes.astype(np.float32) * s


def dequantize(codes: np.ndarray, scales: np.ndarray, group: int | None = None) -> np.ndarray:
    """float32 [R,C] = codes x the scale of each value's row or group."""
    return scale_codes(codes, expand_scales(scales, codes.shape[1], group))


def dequantize_rows(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 [R,C] = codes * scale per row."""
    return dequantize(codes, scales, None)


def check_rows(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise QuantError(f"row/group quantization needs a 2-D tensor, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise QuantError("tensor holds NaN or infinite values; it cannot be quantized")
    return w


# --- clip (scale) choice -------------------------------------------------------------------------------------
def absmax_clip(w: np.ndarray, group: int | None = None) -> np.ndarray:
    """max |w| per row/group: [R, G] float32."""
    return group_reduce(np.abs(check_rows(w)), group, np.max).astype(np.float32)


def absmean_clip(w: np.ndarray, group: int | None = None) -> np.ndarray:
    """mean |w| per row/group (ternary's scale, as 2-bit clip): [R, G] float32."""
    w = check_rows(w)
    sums = group_reduce(np.abs(w).astype(np.float64), group, np.sum)
    counts = np.maximum(group_counts(w.shape[1], group), 1)
    return (sums / counts[None, :]).astype(np.float32)


def sdclip_clip(w: np.ndarray, bits: int, group: int | None = None, k: float | None = None) -> np.ndarray:
    """SDClip: min(k * std, max |w|) per row/group (population std); k defaults to SDCLIP_K[bits]."""
    w = check_rows(w)
    k = SDCLIP_K[bits] if k is None else float(k)
    if not k > 0:
        raise QuantError(f"SDClip's k must be positive, got {k}")
    std = group_reduce(w.astype(np.float64), group, np.std)
    return np.minimum((k * std).astype(np.float32), absmax_clip(w, group))


def weighted_sq_error(w: np.ndarray, w_hat: np.ndarray, group: int | None,
                      weights: np.ndarray | None = None) -> np.ndarray:
    """sum over each row/group of weights[c] * (w - w_hat)^2, float64 [R, G] (weights [C], default 1)."""
    d = (np.asarray(w, np.float32) - np.asarray(w_hat, np.float32)).astype(np.float64) ** 2
    if weights is not None:
        d = d * np.asarray(weights, dtype=np.float64)[None, :]
    return group_reduce(d, group, np.sum)


def clip_search(w: np.ndarray, bits: int, group: int | None = None, fractions=CLIP_FRACTIONS,
                weights: np.ndarray | None = None) -> np.ndarray:
    """Per row/group, the clip f * max|w| (f in `fractions`) whose quantization has the least (column-
    weighted) squared error; ties keep the larger fraction. [R, G] float32."""
    return clip_search_grids(w, bits, group, {"one": fractions}, weights)["one"]


def clip_search_grids(w: np.ndarray, bits: int, group: int | None, grids: dict, weights: np.ndarray | None = None
                      ) -> dict:
    """clip_search for several fraction grids at once (name -> clip [R, G]): each fraction's error is computed
    once and shared by every grid holding it; each grid's result equals clip_search over that grid alone."""
    w = check_rows(w)
    amax = absmax_clip(w, group)
    wanted = sorted({float(f) for fr in grids.values() for f in fr}, reverse=True)
    for f in wanted:
        if not 0 < f <= 1:
            raise QuantError(f"clip fractions must lie in (0, 1], got {f}")
    best = {k: amax.copy() for k in grids}
    best_err = {k: np.full(amax.shape, np.inf) for k in grids}
    members = {k: {float(f) for f in fr} for k, fr in grids.items()}
    for f in wanted:
        clip = amax * np.float32(f)
        s = scales_for_clip(clip, bits)
        err = weighted_sq_error(w, dequantize(quantize_with_scales(w, s, bits, group), s, group), group, weights)
        for k in grids:
            if f in members[k]:
                better = err < best_err[k]
                best_err[k] = np.where(better, err, best_err[k])
                best[k] = np.where(better, clip, best[k])
    return {k: v.astype(np.float32) for k, v in best.items()}


def quantize_groups(w: np.ndarray, bits: int, group: int | None = None,
                    clip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 [R,C], scales fp16 [R,G]) with clip [R,G] (default: absmax)."""
    w = check_rows(w)
    if clip is None:
        clip = absmax_clip(w, group)
    clip = np.asarray(clip, dtype=np.float32).reshape(w.shape[0], n_groups(w.shape[1], group))
    scales = scales_for_clip(clip, bits)
    return quantize_with_scales(w, scales, bits, group), scales


def quantize_rows(w: np.ndarray, bits: int, clip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric quantization of a 2-D float array: (codes int8 [R,C], scales fp16 [R])."""
    codes, scales = quantize_groups(w, bits, None, clip)
    return codes, scales[:, 0]


def hessian_error(w: np.ndarray, w_hat: np.ndarray, h: np.ndarray) -> float:
    """tr(E H E^T) with E = w - w_hat [R,C] and H [C,C]: the summed squared output error over the inputs
    that made H = sum x x^T."""
    e = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
    return float(np.sum((e @ np.asarray(h, np.float64)) * e))


# --- NF4 ---------------------------------------------------------------------------------------------------------
def nf4_quantize(flat: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(packed uint8 codes [ceil(n/2)], float32 absmax [ceil(n/block)]) of a flat float32 array, exactly as
    bitsandbytes' quantize_4bit(quant_type="nf4") computes them on the CPU (a test checks it bit for bit): each
    full block scaled by the reciprocal of its absmax, the last partial block divided by its absmax, clamped
    to [-1, 1], the nearest code by the float32 midpoints of NF4_CODE (ties to the lower code), an odd count
    padded with one zero, two codes a byte, high nibble first. Pure numpy: no torch in the encoders."""
    flat = np.asarray(flat, dtype=np.float32).reshape(-1)
    n = flat.size
    full = n - n % block
    com = flat[:full].reshape(full // block, block)
    absmax = np.abs(com).max(axis=1) if full else np.zeros(0, np.float32)
    tiny = np.float32(1e-38)
    scaled = np.clip(com * (np.float32(1.0) / np.maximum(absmax, tiny))[:, None], -1, 1).reshape(-1)
    if n % block:                        # bitsandbytes stores the partial block's absmax after its 1e-38 floor
        last = np.maximum(np.abs(flat[full:]).max(), tiny)
        absmax = np.append(absmax, last)
        scaled = np.concatenate([scaled, np.clip(flat[full:] / last, -1, 1)])
    if n % 2:
        scaled = np.append(scaled, np.float32(0))
    mid = ((NF4_CODE[:-1] + NF4_CODE[1:]) / np.float32(2)).astype(np.float32)
    idx = np.searchsorted(mid, scaled.astype(np.float32), side="left").astype(np.uint8)
    return ((idx[0::2] << 4) | idx[1::2]).astype(np.uint8), absmax.astype(np.float32)



def nf4_dequantize(packed: np.ndarray, absmax: np.ndarray, n: int, block: int) -> np.ndarray:
    """float32 [n] from packed uint8 codes [ceil(n/2)] (high nibble first) and per-block absmax [ceil(n/block)]."""
    packed = np.asarray(packed, dtype=np.uint8).ravel()
    if len(packed) != (n + 1) // 2 or len(absmax) != -(-n // block):
        raise QuantError(f"NF4 arrays do not fit {n} values in blocks of {block}: {len(packed)} code bytes, "
                         f"{len(absmax)} scales")
    codes = np.empty(2 * len(packed), dtype=np.uint8)
    codes[0::2] = packed >> 4
    codes[1::2] = packed & 15
    scale = np.repeat(np.asarray(absmax).astype(np.float32), block)[:n]
    return NF4_CODE[codes[:n]] * scale
