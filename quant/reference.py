"""A slow, obviously-correct restatement of quant/primitives.py, for tests to compare against bit for bit.

One row and one group at a time, one value at a time where the arithmetic allows, in the same float32 /
float16 / float64 types the specification names (FORMAT.md "Tensor formats"). Never used by the pipeline;
it shares nothing with primitives.py but the specification (and the NF4 code book, a table of constants).
"""

from __future__ import annotations

import numpy as np

F16, F32, F64 = np.float16, np.float32, np.float64


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def groups_of(cols: int, group: int | None) -> list[tuple[int, int]]:
    """(start, stop) column ranges of a row's groups."""
    if group is None:
        return [(0, cols)]
    return [(a, min(a + group, cols)) for a in range(0, cols, group)]


def scale_of(clip: float, bits: int) -> np.float16:
    return F16(F32(clip) / F32(qmax(bits)))


def code_of(x: float, scale: np.float16, bits: int) -> int:
    s = F32(scale)
    if s == 0:
        return 0
    q = float(np.rint(F32(x) / s))          # round half to even, in float32
    return int(min(max(q, -qmax(bits)), qmax(bits)))


def quantize(w: np.ndarray, bits: int, group: int | None, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """codes [R,C] int8 and scales [R,G] fp16 from per-group clips [R,G]."""
    R, C = w.shape
    spans = groups_of(C, group)
    codes = np.zeros((R, C), dtype=np.int8)
    scales = np.zeros((R, len(spans)), dtype=F16)
    for r in range(R):
        for g, (a, b) in enumerate(spans):
            s = scale_of(float(clips[r, g]), bits)
            scales[r, g] = s
            for c in range(a, b):
                codes[r, c] = code_of(float(w[r, c]), s, bits)
    return codes, scales


def dequantize(codes: np.ndarray, scales: np.ndarray, group: int | None) -> np.ndarray:
    R, C = codes.shape
    out = np.zeros((R, C), dtype=F32)
    for r in range(R):
        for g, (a, b) in enumerate(groups_of(C, group)):
            for c in range(a, b):
                out[r, c] = F32(int(codes[r, c])) * F32(scales[r, g])
    return out


def absmax(w: np.ndarray, group: int | None) -> np.ndarray:
    R, C = w.shape
    spans = groups_of(C, group)
    out = np.zeros((R, len(spans)), dtype=F32)
    for r in range(R):
        for g, (a, b) in enumerate(spans):
            out[r, g] = max((abs(float(v)) for v in w[r, a:b]), default=0.0)
    return out


def absmean(w: np.ndarray, group: int | None) -> np.ndarray:
    R, C = w.shape
    spans = groups_of(C, group)
    out = np.zeros((R, len(spans)), dtype=F32)
    for r in range(R):
        for g, (a, b) in enumerate(spans):
            out[r, g] = F32(np.sum(np.abs(w[r, a:b]).astype(F64)) / max(b - a, 1))
    return out


def sdclip(w: np.ndarray, bits: int, group: int | None, k: float) -> np.ndarray:
    R, C = w.shape
    amax = absmax(w, group)
    out = np.zeros_like(amax)
    for r in range(R):
        for g, (a, b) in enumerate(groups_of(C, group)):
            std = np.std(w[r, a:b].astype(F64)) if b > a else 0.0
            out[r, g] = min(F32(k * std), amax[r, g])
    return out


def group_error(w_row: np.ndarray, deq_row: np.ndarray, weights: np.ndarray | None) -> float:
    d = (w_row.astype(F32) - deq_row.astype(F32)).astype(F64) ** 2
    if weights is not None:
        d = d * weights.astype(F64)
    return np.sum(d)


def clip_search(w: np.ndarray, bits: int, group: int | None, fractions, weights=None) -> np.ndarray:
    """For each group separately: try every fraction from the largest down, keep strict improvements."""
    R, C = w.shape
    amax = absmax(w, group)
    out = amax.copy()
    for r in range(R):
        for g, (a, b) in enumerate(groups_of(C, group)):
            best = np.inf
            for f in sorted({float(f) for f in fractions}, reverse=True):
                clip = F32(amax[r, g] * F32(f))
                s = scale_of(float(clip), bits)
                deq = np.array([F32(code_of(float(x), s, bits)) * F32(s) for x in w[r, a:b]], dtype=F32)
                err = group_error(w[r, a:b], deq, None if weights is None else weights[a:b])
                if err < best:
                    best, out[r, g] = err, clip
    return out


def nf4_decode(packed: np.ndarray, absmax_: np.ndarray, n: int, block: int, code: np.ndarray) -> np.ndarray:
    out = np.zeros(n, dtype=F32)
    for i in range(n):
        byte = int(packed[i // 2])
        idx = byte >> 4 if i % 2 == 0 else byte & 15
        out[i] = F32(code[idx]) * F32(absmax_[i // block])
    return out


def gptq(w: np.ndarray, h: np.ndarray, scales: np.ndarray, bits: int, group: int | None, damp_frac: float,
         act_order: bool) -> np.ndarray:
    """Unblocked GPTQ (Frantar et al. 2022, Algorithm 1 with block size 1), float64, fixed scales."""
    W = w.astype(F64).copy()
    H = h.astype(F64).copy()
    C = W.shape[1]
    for j in range(C):
        if H[j, j] == 0:
            H[j, j] = 1.0
    order = list(range(C))
    if act_order:
        order = sorted(range(C), key=lambda j: (-H[j, j], j))
    W, H = W[:, order], H[np.ix_(order, order)]
    H = H + damp_frac * float(np.mean(np.diag(H))) * np.eye(C)
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    codes = np.zeros(W.shape, dtype=np.int8)
    spans = groups_of(C, group)
    col_group = {c: g for g, (a, b) in enumerate(spans) for c in range(a, b)}
    for i in range(C):
        g = col_group[order[i]]
        deq = np.zeros(W.shape[0])
        for r in range(W.shape[0]):
            s = F16(scales[r, g])
            codes[r, order[i]] = code_of(float(W[r, i]), s, bits)
            deq[r] = float(F32(int(codes[r, order[i]])) * F32(s))
        err = (W[:, i] - deq) / U[i, i]
        W[:, i:] -= np.outer(err, U[i, i:])
    return codes
