"""The ANS encoders (never needed to read an artifact, so not part of the counted runtime code).

`encode_codes(X, "speed")` (the default) fits the grid model (packer/entropy/grid_encode.py) in one pass
over the codes, plus grid-refs where a cheap probe finds near-copy rows, and keeps the smaller blob; `"size"`
also encodes the categorical tables and every parametric variant of models 1 and 2 and a wider grid search,
and keeps the smallest blob (first wins ties). Equal input gives equal bytes. `encode_planes` codes byte
planes with categorical tables only. Must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from packer.entropy import blob as io
from packer.entropy import fit, grid_encode
from packer.entropy.param import (
    FLAG_COL_MEAN,
    FLAG_COL_SIGMA,
    FLAG_REFS,
    ParamFit,
    _base_params,
    _chunks,
    _param_model,
    _ref_chunks,
    _ref_params,
    _wave_rows,
)

GROUP_CHOICES = (2, 4, 8, 16)
MAX_ROW_TABLES = 8               # at most this many rows may each get their own table
MAX_HISTOGRAM_CELLS = 1 << 26    # row groups need rows x alphabet histogram cells; beyond this they are skipped
PARAM_TRIALS = 2                 # param variants encoded for real, best estimates first (1 for big tensors)
Ans = constriction.stream.stack.AnsCoder
MODEL_CONST, MODEL_TABLES = io.MODEL_CONST, io.MODEL_TABLES


# --- const and tables (models 0 and 1) -------------------------------------------------------------------------
def _encode_const(X: np.ndarray) -> bytes:
    v = int(X.flat[0]) if X.size else 0
    return bytes([MODEL_CONST, v + 128, (v + 128) ^ 0xFF])      # the complement guards the value byte


def _encode_tables(X: np.ndarray, lo: int, hi: int, labels: np.ndarray) -> bytes:
    K = int(labels.max()) + 1
    A = hi - lo + 1
    tables = np.stack([np.bincount(X[labels == g].reshape(-1).astype(np.int64) - lo, minlength=A)
                       for g in range(K)])
    fold, width, prec = fit.choose_table_layout(tables, lo, hi)
    bins, sizes = fit.bin_layout(lo, hi, bool(fold), width)
    w = io.header(MODEL_TABLES, lo, hi)
    for v in (K, fold, width, prec):
        w.u8(v)
    probs = []
    for t in tables:
        q = fit.quantize_counts(np.bincount(bins, weights=t, minlength=sizes.size).astype(np.int64), prec)
        for c in q:
            w.varint(int(c))
        probs.append(fit.table_probabilities(q, bins, sizes))
    side = io.plan_side(labels)
    io.write_side(w, side)
    coder = Ans()
    for g in range(K - 1, -1, -1):
        sym = X[labels == g].reshape(-1).astype(np.int32) - np.int32(lo)
        if sym.size:
            coder.encode_reverse(sym, constriction.stream.model.Categorical(probs[g], perfect=False))
    if side.kind != io.SIDE_CONST:
        coder.encode_reverse(side.symbols(labels), side.model())
    return io.finish(w, coder)


def _table_candidates(X: np.ndarray, lo: int, hi: int) -> list[bytes]:
    R = X.shape[0]
    blobs = [_encode_tables(X, lo, hi, np.zeros(R, np.int64))]
    if 2 <= R <= MAX_ROW_TABLES:              # a few long rows (byte planes): one table each
        blobs.append(_encode_tables(X, lo, hi, np.arange(R)))
    if R >= 4 and R * (hi - lo + 1) <= MAX_HISTOGRAM_CELLS:
        H = fit.row_histograms(X, lo, hi)
        for k in GROUP_CHOICES:
            if R >= 2 * k:
                labels = fit.fit_groups(H, k)
                if labels.max() > 0:
                    blobs.append(_encode_tables(X, lo, hi, labels))
    return blobs


# --- param (model 2) ---------------------------------------------------------------------------------------------
def _param_head(pf: ParamFit, lo: int, hi: int):
    flags = (FLAG_COL_SIGMA if pf.b is not None else 0) | (FLAG_COL_MEAN if pf.m4 is not None else 0) | \
        (FLAG_REFS if pf.parent is not None else 0)
    w = io.header(io.MODEL_PARAM, lo, hi)
    w.u8(fit.SHAPES.index(pf.shape))
    w.u8(flags)
    sides = [(v, io.plan_side(v)) for _, v in pf.side_arrays()]
    for _, p in sides:
        io.write_side(w, p)
    return w, sides


def _encode_sides(coder: Ans, sides) -> None:
    for v, p in reversed(sides):
        if p.kind != io.SIDE_CONST and len(v):
            coder.encode_reverse(p.symbols(v), p.model())


def encode_param(X: np.ndarray, lo: int, hi: int, pf: ParamFit) -> bytes:
    R, C = X.shape
    waves = _wave_rows(pf.parent, R)
    w, sides = _param_head(pf, lo, hi)
    model = _param_model(pf.shape, lo, hi)
    b, m4 = _base_params(pf, C)
    coder = Ans()
    for rows, idx in reversed(list(_ref_chunks(pf, waves, C))):
        mu, sig = _ref_params(pf, rows, idx, X, lo, hi)
        coder.encode_reverse(X[rows].reshape(-1).astype(np.int32), model, mu, sig)
    base_rows = waves[0]
    for i0, i1 in reversed(_chunks(base_rows.size, C)):
        k = pf.a_base[i0:i1, None] + b[None, :]
        mu = np.broadcast_to(m4[None, :] / 4.0, k.shape).reshape(-1)
        coder.encode_reverse(X[base_rows[i0:i1]].reshape(-1).astype(np.int32), model, mu,
                             fit.sigma_for_index(k).reshape(-1))
    _encode_sides(coder, sides)
    return io.finish(w, coder)


def _estimate_param_bytes(cm: fit.CostModel, pf: ParamFit, data_bits: float) -> float:
    w, sides = _param_head(pf, cm.lo, cm.hi)
    coder = Ans()
    _encode_sides(coder, sides)
    return len(w.buf) + (coder.num_bits() + data_bits) / 8 + 4


@dataclass(frozen=True)
class _Variant:
    shape: str
    row_sigma: bool
    col_sigma: bool
    col_mean: bool
    fitted: tuple            # (a, b, m4) on the fitting rows


def _param_candidates(X: np.ndarray, lo: int, hi: int, shape: str) -> list[tuple[float, _Variant]]:
    """(estimated bytes, variant) for every on/off combination of row sigma, column sigma and column mean,
    fitted and ranked on a row sample when the tensor is large (estimates scaled to the whole tensor)."""
    R, C = X.shape
    sample = fit.sample_rows(R, C)
    Xs = X if sample is None else X[sample]
    scale = 1.0 if sample is None else R / len(sample)
    cm = fit.CostModel(Xs, lo, hi, shape)
    cols = R >= 4 and C >= 4
    full = fit.fit_spread(cm, row_sigma=True, col_sigma=cols, col_mean=cols)
    out = []
    for rs in (False, True):
        for cs in ((False, True) if cols else (False,)):
            for mu in ((False, True) if cols else (False,)):
                a, b, m4 = full if (rs and cs == cols and mu == cols) else fit.reduce_spread(cm, full, rs, cs, mu)
                pf = ParamFit(shape, a, b if cs else None, m4 if mu else None)
                est = _estimate_param_bytes(cm, pf, cm.total_bits(a, b, m4)) * scale
                out.append((est, _Variant(shape, rs, cs, mu, (a, b, m4))))
    return out


def _lift(X: np.ndarray, lo: int, hi: int, v: _Variant, cms: dict) -> tuple[float, ParamFit]:
    """A variant fitted on all rows: column parameters kept, row sigmas refitted when fitted on a sample."""
    R = X.shape[0]
    cm = cms.setdefault(v.shape, fit.CostModel(X, lo, hi, v.shape))
    a, b, m4 = v.fitted
    if len(a) != R:
        a = fit.fit_row_sigma(cm, b, m4) if v.row_sigma else fit.fit_tensor_sigma(cm, b, m4)
    pf = ParamFit(v.shape, a, b if v.col_sigma else None, m4 if v.col_mean else None)
    return _estimate_param_bytes(cm, pf, cm.total_bits(a, b, m4)), pf


def _fit_refs(cm: fit.CostModel, parent: np.ndarray, base: ParamFit) -> tuple[float, ParamFit] | None:
    """Rows that are near-copies of an earlier row, predicted from it (LZ-like), where that pays."""
    cand = np.flatnonzero(parent >= 0)
    if not cand.size:
        return None
    X, lo, hi = cm.X, cm.lo, cm.hi
    R, C = X.shape
    b, m4 = _base_params(base, C)
    a = base.a_base
    own = cm.row_bits(a[cand], b, m4, cand)
    xp = X[parent[cand]].astype(np.float64)
    beta = np.clip(np.round(16 * (X[cand] * xp).sum(1) / np.maximum((xp * xp).sum(1), 1)), 1, 64).astype(np.int64)

    def cost(ar, bt):
        return cm.ref_bits(cand, ar, fit.ref_means4(bt, X[parent[cand]], lo, hi))

    m4r = fit.ref_means4(beta, X[parent[cand]], lo, hi)
    ar = fit._init_k(np.sqrt(((X[cand] - m4r / 4.0) ** 2).mean(1)), cm.shape)
    ar = fit._descend(lambda v: cost(v, beta), ar, fit.K_MIN, fit.K_MAX)
    beta = fit._descend(lambda v: cost(ar, v), beta, 1, 64)
    ar = fit._descend(lambda v: cost(v, beta), ar, fit.K_MIN, fit.K_MAX)
    ref_bits = cost(ar, beta)
    keep = own - ref_bits > 16.0 + np.log2(cand + 1.0)
    if not keep.any():
        return None
    par = np.full(R, -1, np.int64)
    par[cand[keep]] = parent[cand[keep]]
    base_rows = np.flatnonzero(par < 0)
    pf = ParamFit(cm.shape, a[base_rows], base.b, base.m4, par, ar[keep], beta[keep])
    bits = float(cm.row_bits(a[base_rows], b, m4, base_rows).sum()) + float(ref_bits[keep].sum())
    return _estimate_param_bytes(cm, pf, bits), pf


def search_param(X: np.ndarray, lo: int, hi: int) -> list[ParamFit]:
    """The param fits worth encoding for real: the best estimates (both shapes, all variants) fitted on all
    rows, plus row references on top of the best where they are estimated to pay."""
    cands = [c for shape in fit.SHAPES for c in _param_candidates(X, lo, hi, shape)]
    order = sorted(range(len(cands)), key=lambda i: (cands[i][0], i))
    cms: dict = {}
    trials = PARAM_TRIALS if X.size <= 1 << 20 else 1
    lifted = [_lift(X, lo, hi, cands[i][1], cms) for i in order[:trials]]
    parent = fit.find_parents(X)
    if (parent >= 0).any():
        est, best = min(lifted, key=lambda t: t[0])
        refs = _fit_refs(cms[best.shape], parent, best)
        if refs is not None and refs[0] < est:
            lifted.append(refs)
    return [pf for _, pf in lifted]


# --- the public encoders ---------------------------------------------------------------------------------------
def encode_codes(X: np.ndarray, prefer: str = "speed") -> bytes:
    """An ANS blob for int codes X [R, C] (deterministic). "speed": the grid model fitted in one pass over
    the codes; "size": the smallest of every model's candidates, a wider grid search included."""
    X = np.ascontiguousarray(X, np.int8)
    if X.size == 0 or int(X.min()) == int(X.max()):
        return _encode_const(X)
    lo, hi = int(X.min()), int(X.max())
    if prefer == "speed":
        blobs = [_grid_blob(X)]
        R, C = X.shape
        if R * R * C <= grid_encode.MAX_SEARCH_CELLS and grid_encode.worth_searching(X):
            blobs.append(_refs_blob(X, lo, hi))
        return min((b for b in blobs if b is not None), key=len)
    blobs = _table_candidates(X, lo, hi)
    blobs += [encode_param(X, lo, hi, pf) for pf in search_param(X, lo, hi)]
    blobs.append(_grid_blob(X, exhaustive=True))
    blobs.append(_refs_blob(X, lo, hi, exhaustive=True))
    return min((b for b in blobs if b is not None), key=len)


def _grid_blob(X: np.ndarray, exhaustive: bool = False) -> bytes:
    """const or grid blob of X (a part of a grid-refs blob, or a whole section)."""
    if X.size == 0 or int(X.min()) == int(X.max()):
        return _encode_const(X)
    lo, hi = int(X.min()), int(X.max())
    if exhaustive:
        return grid_encode.encode_grid(X, lo, hi, grid_encode.search(X, lo, hi, grid_encode.FIT_STEPS, 4, exhaustive=True)[1])
    return grid_encode.encode_grid(X, lo, hi, grid_encode.search(X, lo, hi)[1])


def _refs_blob(X: np.ndarray, lo: int, hi: int, exhaustive: bool = False) -> bytes | None:
    refs = grid_encode.fit_refs(X, lo, hi)
    if refs is None:
        return None
    base = np.ascontiguousarray(X[refs.parent < 0])
    resid = grid_encode.residuals(X, refs, lo, hi)
    return grid_encode.encode_parts(refs, _grid_blob(base, exhaustive), _grid_blob(resid, exhaustive), lo, hi)


def encode_planes(X: np.ndarray) -> bytes:
    """An ANS blob for byte planes (rows of (byte - 128) of wider elements): categorical tables only."""
    X = np.ascontiguousarray(X, np.int8)
    if X.size == 0 or int(X.min()) == int(X.max()):
        return _encode_const(X)
    return min(_table_candidates(X, int(X.min()), int(X.max())), key=len)
