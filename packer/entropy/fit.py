"""Fitting the entropy models' parameters to integer codes (encoder side only; pure numpy; never needed to
read an artifact, so not part of the counted runtime code).

Owns: the bit-cost tables of constriction's
quantized Gaussian/Laplace *as constriction really defines them* (the tail mass beyond the range goes to the
two boundary symbols, it is not renormalised), coordinate-descent fits of per-row / per-column spreads and
per-column means, near-duplicate row clusters, hard-EM row groups for categorical tables, and histogram
precision choice. What the decoder shares (sigma grid, ref means and waves, table bins) is in exact.py.
Must not import torch or touch blob bytes.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from packer.entropy.exact import (  # noqa: F401 - re-exported for the encoders
    K_MAX,
    K_MIN,
    SHAPES,
    bin_layout,
    ref_means4,
    ref_waves,
    sigma_for_index,
    table_probabilities,
)

NK = K_MAX - K_MIN + 1
D_MAX = 4 * 255            # |4*x - mean4| for any two int8 values
ND = 2 * D_MAX + 1
MIN_PROB_BITS = 24.0       # constriction's default models give every symbol at least 2^-24
COST_QUANTUM = 4096.0      # cost-table resolution: 1/4096 bit


# --- cost tables ---------------------------------------------------------------------------------------------
_NR = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
       -0.82215223, 0.17087277)


def _log_erfc(x: np.ndarray) -> np.ndarray:
    """ln erfc(x) for x >= 0 (Numerical Recipes' erfcc: fractional error < 1.2e-7 everywhere)."""
    t = 1.0 / (1.0 + 0.5 * x)
    poly = np.zeros_like(x)
    for c in _NR[::-1]:
        poly = poly * t + c
    return np.log(t) - x * x + poly


def _log_upper(z: np.ndarray, shape: str) -> np.ndarray:
    """ln P(Z >= z) for the unit Gaussian (std 1) or unit Laplace (scale 1)."""
    a = np.abs(z)
    tail = (math.log(0.5) + _log_erfc(a / math.sqrt(2.0))) if shape == "gauss" else (math.log(0.5) - a)
    return np.where(z >= 0, tail, np.log1p(-np.exp(tail)))


def _log_diff(big: np.ndarray, small: np.ndarray) -> np.ndarray:
    """ln(e^big - e^small) for big >= small."""
    return big + np.log(-np.expm1(np.minimum(small - big, -1e-300)))


@functools.lru_cache(maxsize=4)
def cost_table(shape: str) -> np.ndarray:
    """Flat float32 bits[type, k - K_MIN, d + D_MAX] of coding x where d = 4x - mean4 and sigma index k;
    type 0 = interior symbol, 1 = the lowest symbol of the range, 2 = the highest."""
    sig = sigma_for_index(np.arange(K_MIN, K_MAX + 1))[:, None]
    off = np.arange(-D_MAX, D_MAX + 1)[None, :] / 4.0
    u, v = (off - 0.5) / sig, (off + 0.5) / sig
    lu_u, lu_v = _log_upper(u, shape), _log_upper(v, shape)
    ll_u, ll_v = _log_upper(-u, shape), _log_upper(-v, shape)
    right = _log_diff(lu_u, lu_v)                      # both edges right of the mean
    left = _log_diff(ll_v, ll_u)                       # both edges left of the mean
    mid = np.log1p(-np.minimum(np.exp(lu_v) + np.exp(ll_u), 1 - 1e-16))
    interior = np.where(u >= 0, right, np.where(v <= 0, left, mid))
    tabs = [interior, ll_v, lu_u]                      # P(x), P(Z <= v) at the bottom, P(Z >= u) at the top
    bits = np.stack([np.minimum(-t / math.log(2.0), MIN_PROB_BITS) for t in tabs])
    # multiples of 2^-12 bit: float64 sums of them are exact, so fits do not depend on summation order
    bits = np.round(bits * COST_QUANTUM) / COST_QUANTUM
    return np.ascontiguousarray(bits, dtype=np.float32).reshape(-1)


class CostModel:
    """Bit costs of codes X [R, C] under per-element (sigma index k, mean4) with the tail-to-boundary rule.

    Index arithmetic is int32 and pre-offset: the cost of x_ij is tab[base_ij + k_ij * ND - m4_ij]."""

    def __init__(self, X: np.ndarray, lo: int, hi: int, shape: str) -> None:
        self.X = X
        self.tab = cost_table(shape)
        typ = np.where(X == lo, 1, np.where(X == hi, 2, 0)).astype(np.int32)
        self.base = typ * np.int32(NK * ND) + np.int32(D_MAX - K_MIN * ND) + 4 * X.astype(np.int32)
        self.lo, self.hi, self.shape = lo, hi, shape

    def with_cols(self, b: np.ndarray, m4: np.ndarray) -> np.ndarray:
        return self.base + (b * ND - m4).astype(np.int32)[None, :]

    def with_rows(self, a: np.ndarray, m4: np.ndarray) -> np.ndarray:
        return self.base + (a * ND).astype(np.int32)[:, None] - m4.astype(np.int32)[None, :]

    def with_sigma(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.base + ((a[:, None] + b[None, :]) * ND).astype(np.int32)

    def row_bits(self, a: np.ndarray, b: np.ndarray, m4: np.ndarray, rows=slice(None)) -> np.ndarray:
        idx = self.base[rows] + (b * ND - m4).astype(np.int32)[None, :] + (a * ND).astype(np.int32)[:, None]
        return self.tab[idx].sum(1, dtype=np.float64)

    def ref_bits(self, rows: np.ndarray, a: np.ndarray, m4: np.ndarray) -> np.ndarray:
        """Per-row bits of rows with one sigma index each and per-element means m4 [len(rows), C]."""
        idx = self.base[rows] - m4.astype(np.int32) + (a * ND).astype(np.int32)[:, None]
        return self.tab[idx].sum(1, dtype=np.float64)

    def total_bits(self, a: np.ndarray, b: np.ndarray, m4: np.ndarray) -> float:
        return float(self.row_bits(a, b, m4).sum())


def _offsets(window: int) -> list[int]:
    return [d for w in range(1, window + 1) for d in (-w, w)]


def _descend(cost_of, values: np.ndarray, lo: int, hi: int, window: int = 2, rounds: int = 8) -> np.ndarray:
    """Per-group integer parameter minimising cost_of(values) -> per-group bits, by local search."""
    values = np.clip(values, lo, hi)
    for _ in range(rounds):
        cur = cost_of(values)
        best, best_cost = values.copy(), cur
        for d in _offsets(window):
            cand = np.clip(values + d, lo, hi)
            c = cost_of(cand)
            better = c < best_cost - 1e-3
            best = np.where(better, cand, best)
            best_cost = np.where(better, c, best_cost)
        if np.array_equal(best, values):
            break
        values = best
    return values


def _init_k(rms: np.ndarray, shape: str) -> np.ndarray:
    shift = -4 if shape == "laplace" else 0          # Laplace scale = std / sqrt(2) = half an octave lower
    k = np.round(8 * np.log2(np.maximum(rms, 1e-3))) + shift
    return np.clip(k, K_MIN, K_MAX).astype(np.int64)


FIT_SAMPLE_ELEMS = 1 << 18     # variants are fitted and ranked on at most this many codes (evenly spaced rows)


def sample_rows(R: int, C: int) -> np.ndarray | None:
    """None (use all rows), or evenly spaced rows holding about FIT_SAMPLE_ELEMS codes."""
    n = max(16, FIT_SAMPLE_ELEMS // max(C, 1))
    if n >= R:
        return None
    return np.unique(np.linspace(0, R - 1, n).round().astype(np.int64))


def _k_bounds(b: np.ndarray) -> tuple[int, int]:
    return K_MIN - int(b.min()), K_MAX - int(b.max())


def fit_row_sigma(cm: CostModel, b: np.ndarray, m4: np.ndarray, a=None) -> np.ndarray:
    """Per-row sigma index given column offsets b and column means m4 (local search from the RMS guess)."""
    if a is None:
        a = _init_k(np.sqrt(((cm.X - m4[None, :] / 4.0) ** 2).mean(1)), cm.shape) - int(np.median(b))
    bc = cm.with_cols(b, m4)
    return _descend(lambda v: cm.tab[bc + (v * ND).astype(np.int32)[:, None]].sum(1, dtype=np.float64), a, *_k_bounds(b))


def fit_tensor_sigma(cm: CostModel, b: np.ndarray, m4: np.ndarray) -> np.ndarray:
    a0 = _init_k(np.sqrt(((cm.X - m4[None, :] / 4.0) ** 2).mean()), cm.shape)[None]
    bc = cm.with_cols(b, m4)
    one = _descend(lambda v: cm.tab[bc + np.int32(v[0] * ND)].sum(dtype=np.float64)[None], a0, *_k_bounds(b))
    return np.full(cm.X.shape[0], one[0], np.int64)


def fit_spread(cm: CostModel, row_sigma: bool = True, col_sigma: bool = True, col_mean: bool = True):
    """(a [R], b [C], m4 [C]): sigma index a_i + b_j and mean m4_j / 4, by alternating local search."""
    C = cm.X.shape[1]
    m4 = np.clip(np.round(4 * cm.X.mean(0)), 4 * cm.lo, 4 * cm.hi).astype(np.int64) if col_mean else \
        np.zeros(C, np.int64)
    b = np.zeros(C, np.int64)
    a = None
    for _ in range(3):
        a = fit_row_sigma(cm, b, m4, a) if row_sigma else fit_tensor_sigma(cm, b, m4)
        if col_sigma:
            br = cm.with_rows(a, m4)
            b = _descend(lambda v, br=br: cm.tab[br + (v * ND).astype(np.int32)[None, :]].sum(0, dtype=np.float64), b,
                         K_MIN - int(a.min()), K_MAX - int(a.max()))
        if col_mean:
            bk = cm.with_sigma(a, b)
            m4 = _descend(lambda v, bk=bk: cm.tab[bk - v.astype(np.int32)[None, :]].sum(0, dtype=np.float64), m4,
                          4 * cm.lo, 4 * cm.hi)
    return a, b, m4


def reduce_spread(cm: CostModel, full, row_sigma: bool, col_sigma: bool, col_mean: bool):
    """A cheaper variant of a full fit: dropped parts become constants (b = 0, m4 = 0, one sigma) and the
    row sigmas are refitted for what remains."""
    a, b, m4 = (x.copy() for x in full)
    C = cm.X.shape[1]
    if not col_sigma:
        b = np.zeros(C, np.int64)
    if not col_mean:
        m4 = np.zeros(C, np.int64)
    a = fit_row_sigma(cm, b, m4, a=a) if row_sigma else fit_tensor_sigma(cm, b, m4)
    return a, b, m4


# --- near-duplicate rows -------------------------------------------------------------------------------------
MAX_CLUSTER_ROWS = 16384


def find_parents(X: np.ndarray, min_corr: float = 0.8) -> np.ndarray:
    """For each row, the earlier row its codes are most nearly proportional to (-1 if none is close).

    Dot products of integer codes in float64 are exact, so the result does not depend on BLAS blocking."""
    R, C = X.shape
    parent = np.full(R, -1, np.int64)
    if R < 2 or C < 8 or R > MAX_CLUSTER_ROWS:
        return parent
    amax = int(np.abs(X.astype(np.int64)).max()) if X.size else 0
    F = X.astype(np.float32 if amax * amax * C < (1 << 24) else np.float64)   # exact integer dot products
    norms = np.sqrt((F.astype(np.float64) ** 2).sum(1))
    for i0 in range(1, R, 1024):
        i1 = min(R, i0 + 1024)
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = (F[i0:i1] @ F[:i1].T) / (norms[i0:i1, None] * norms[None, :i1])
        corr[~np.isfinite(corr)] = -1.0
        corr[np.arange(i1 - i0)[:, None] <= np.arange(i1)[None, :] - i0] = -1.0   # only earlier rows
        j = corr.argmax(1)
        ok = corr[np.arange(i1 - i0), j] >= min_corr
        parent[i0:i1] = np.where(ok, j, -1)
    return parent


# --- categorical tables ----------------------------------------------------------------------------------------
def row_histograms(X: np.ndarray, lo: int, hi: int) -> np.ndarray:
    R = X.shape[0]
    A = hi - lo + 1
    idx = (np.arange(R)[:, None] * A + (X.astype(np.int64) - lo)).reshape(-1)
    return np.bincount(idx, minlength=R * A).reshape(R, A).astype(np.int32)


def fit_groups(H: np.ndarray, k: int, iters: int = 12) -> np.ndarray:
    """Hard-EM assignment of rows (histograms H [R, A]) to at most k categorical tables; labels 0..k'-1."""
    R, A = H.shape
    tot = H.sum(1)
    sym = np.arange(A)
    mean = (H * sym).sum(1) / np.maximum(tot, 1)
    spread = np.sqrt((H * (sym[None, :] - mean[:, None]) ** 2).sum(1) / np.maximum(tot, 1))
    order = np.argsort(spread, kind="stable")
    labels = np.empty(R, np.int64)
    labels[order] = np.minimum(np.arange(R) * k // max(R, 1), k - 1)
    for _ in range(iters):
        tables = np.stack([H[labels == g].sum(0) for g in range(k)]).astype(np.float64)
        logq = np.log2((tables + 0.5) / (tables.sum(1, keepdims=True) + 0.5 * A))
        # small products without BLAS: its threads stall on a busy machine for tiny matrices
        step = max(1, (1 << 22) // (A * k))
        new = np.concatenate([np.argmin(-(H[i:i + step, :, None] * logq.T[None]).sum(1), axis=1)
                              for i in range(0, R, step)])
        if np.array_equal(new, labels):
            break
        labels = new
    used = np.unique(labels)
    return np.searchsorted(used, labels)


def quantize_counts(counts: np.ndarray, prec: int) -> np.ndarray:
    """Counts (last axis) scaled to a total near 2^prec, every present symbol kept at >= 1 (prec 0 = exact)."""
    counts = np.asarray(counts, np.int64)
    if prec == 0:
        return counts.copy()
    total = np.maximum(counts.sum(-1, keepdims=True), 1)
    q = np.rint(counts * float(1 << prec) / total).astype(np.int64)
    return np.where(counts > 0, np.maximum(q, 1), 0)


def varint_len(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.int64)
    n = np.ones(v.shape, np.int64)
    for shift in (7, 14, 21, 28, 35):
        n += v >= (1 << shift)
    return n


BIN_WIDTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 255)


def layout_bits(binned: np.ndarray, sizes: np.ndarray, prec: int) -> float:
    q = quantize_counts(binned, prec)
    logp = np.log2(np.maximum(q, 1) / np.maximum(q.sum(1, keepdims=True), 1))
    bits = float(np.where(binned > 0, binned * (np.log2(sizes)[None, :] - logp), 0.0).sum())
    return bits + 8 * float(varint_len(q).sum())


def choose_table_layout(tables: np.ndarray, lo: int, hi: int) -> tuple[int, int, int]:
    """(fold, width, precision) minimising stored bin counts + coded data bits over all tables: bin layouts
    ranked at a middle precision, then every precision tried on the three best."""
    n_max = int(tables.sum(1).max()) if tables.size else 0
    precs = [0] + [p for p in range(4, 21) if (1 << p) < n_max]
    mid = precs[len(precs) // 2]
    ranked = []
    for fold in (0, 1):
        for width in BIN_WIDTHS:
            if width > hi - lo + 1 and width != BIN_WIDTHS[0]:
                break
            bins, sizes = bin_layout(lo, hi, bool(fold), width)
            binned = np.stack([np.bincount(bins, weights=t, minlength=sizes.size) for t in tables]).astype(np.int64)
            ranked.append((layout_bits(binned, sizes, mid), fold, width, binned, sizes))
    ranked.sort(key=lambda t: (t[0], t[1], t[2]))
    best, best_bits = (0, 1, 0), math.inf
    for _, fold, width, binned, sizes in ranked[:3]:
        for prec in precs:
            bits = layout_bits(binned, sizes, prec)
            if bits < best_bits - 1e-9:
                best, best_bits = (fold, width, prec), bits
    return best
