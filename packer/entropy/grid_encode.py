"""The encoder side of the fast models (never needed to read an artifact): fitting and writing grid and
grid-refs blobs.

`search` fits packer/entropy/grid.py's model: one pass over the codes counts them per (fine row group, fine
column group, code), row / column groups on a 1/8-octave grid of code RMS computed from exact integer sums;
every coarser grouping and every context's parameters are then chosen from those counts by estimated bytes
(a quick ranking, then stored tables and exact side-array costs for the best few). `fit_refs` chooses the
near-copy rows of packer/entropy/refs.py, after a cheap probe (`worth_searching`) says some exist.
`encode_grid` and `encode_parts` write the blobs the decoders in grid.py / refs.py read. Imported lazily by
packer/entropy/models.py's encoders, so the counted runtime code is the decoders only.
Must not import torch.
"""

from __future__ import annotations

import functools
import math

import constriction
import numpy as np

from packer.entropy import blob as io
from packer.entropy import fit
from packer.entropy.grid import (
    FLAG_COLS,
    FLAG_ROWS,
    FLAG_TABLES,
    MAX_CONTEXTS,
    MAX_GROUPS,
    MAX_TUPLE,
    N_SHAPES,
    S_MAX,
    S_MIN,
    TUPLE_CELLS,
    GridFit,
    block_order,
    context_models,
    shape_weights,
)
from packer.entropy.refs import MAX_BETA, MAX_WAVES, Refs, predict

FIT_STEPS = (1, 2, 4, 8)        # row / column groups span 1/8, 1/4, 1/2 or 1 octave of RMS
Ans = constriction.stream.stack.AnsCoder
MIN_TUPLE_CODES = 1 << 12       # smaller tensors are coded one code per symbol (model set-up dominates)
PROBE_ROWS = 16                 # rows sampled to decide whether a near-copy search is worth its time
PROBE_CORR = 0.5                # a sampled row "hits" when an earlier row correlates at least this well
PROBE_MIN_HITS = 2              # hits needed before searching all rows
MAX_SEARCH_CELLS = 1 << 31      # R * R * C multiply-adds at most for the full search in the fast mode


class _Bits:
    """Bits of each code under the parametric candidates of each sigma index, filled in on first use."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.table = np.zeros((S_MAX - S_MIN + 1, N_SHAPES, hi - lo + 1))
        self.done = np.zeros(S_MAX - S_MIN + 1, bool)

    def get(self, sidx: np.ndarray) -> np.ndarray:
        """[..., N_SHAPES, A] bits for the sigma rows `sidx` (indices from S_MIN)."""
        need = np.unique(sidx[~self.done[sidx]])
        if need.size:
            w = shape_weights(self.lo, self.hi)[need]
            self.table[need] = -np.log2(np.maximum(w / w.sum(-1, keepdims=True), 2.0 ** -24))
            self.done[need] = True
        return self.table[sidx]


@functools.lru_cache(maxsize=32)
def shape_bits(lo: int, hi: int) -> _Bits:
    return _Bits(lo, hi)


def tuple_size(A: int, n: int) -> int:
    """Codes per coded symbol the encoder uses for an alphabet of A codes and n codes."""
    if n < MIN_TUPLE_CODES:
        return 1
    g = 1
    while g < MAX_TUPLE and A ** (g + 1) <= TUPLE_CELLS:
        g += 1
    return g


SIGMA_WINDOW = 6                # sigma indices tried on each side of a context's RMS
FIT_CHUNK = 1 << 20             # codes per chunk of the integer sums


def _weighted_sums(x2: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """Exact int64 sums of x2 * w along `axis` (w: int64 per row for axis 0, per column for axis 1)."""
    R, C = x2.shape
    if axis == 0:
        out = np.zeros(C, np.int64)
        step = max(1, FIT_CHUNK // max(C, 1))
        for i in range(0, R, step):
            out += (x2[i:i + step] * w[i:i + step, None]).sum(0)
        return out
    return (x2 * w[None, :]).sum(1) if R * C <= FIT_CHUNK else np.concatenate(
        [(x2[i:i + max(1, FIT_CHUNK // C)] * w[None, :]).sum(1) for i in range(0, R, max(1, FIT_CHUNK // C))])


def fine_groups(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column groups on a 1/8-octave grid of code RMS: row RMS, column RMS of the rows scaled to
    equal RMS, row RMS of the columns so scaled. Sums are exact integers (weights 2^16 / RMS^2 rounded),
    so the groups never depend on summation order."""
    R, C = X.shape
    x2 = X.astype(np.int32)
    x2 *= x2
    rs = x2.sum(1, dtype=np.int64)
    r2 = rs / C + 0.25
    cs = _weighted_sums(x2, np.rint(65536.0 / r2).astype(np.int64), 0)
    c2 = cs / (65536.0 * R) + 0.25
    rs = _weighted_sums(x2, np.rint(65536.0 / c2).astype(np.int64), 1)
    r2 = rs / (65536.0 * C) + 0.25
    return _grid8(r2), _grid8(c2)


def _grid8(ms: np.ndarray) -> np.ndarray:
    k = np.round(4.0 * np.log2(ms)).astype(np.int64)        # 8 log2 RMS = 4 log2 mean square
    if k.size:
        k -= k.min()
    return np.minimum(k, MAX_GROUPS - 1)


def fine_histogram(X: np.ndarray, r8: np.ndarray, c8: np.ndarray, lo: int, A: int) -> np.ndarray:
    """Counts [U8, V8, A] of codes per (fine row group, fine column group, code): the one pass over X."""
    U8, V8 = int(r8.max(initial=0)) + 1, int(c8.max(initial=0)) + 1
    idx = X.astype(np.int32)
    idx += (r8.astype(np.int32) * np.int32(V8 * A) - np.int32(lo))[:, None]
    if V8 > 1:
        idx += (c8.astype(np.int32) * np.int32(A))[None, :]
    return np.bincount(idx.reshape(-1), minlength=U8 * V8 * A).reshape(U8, V8, A).astype(np.int64)


def _ctx_hist(Hf: np.ndarray, ru: np.ndarray, cv: np.ndarray) -> np.ndarray:
    """Counts [K, A] per context k = u + v from the fine counts and the coarse group of each fine group."""
    U8, V8, A = Hf.shape
    K = int(ru.max(initial=0)) + int(cv.max(initial=0)) + 1
    onehot = np.zeros((K, U8 * V8))
    onehot[(ru[:, None] + cv[None, :]).reshape(-1), np.arange(U8 * V8)] = 1.0
    return np.rint(onehot @ Hf.reshape(U8 * V8, A)).astype(np.int64)   # exact: counts < 2^53


def _best_params(H: np.ndarray, lo: int, hi: int, window: int = SIGMA_WINDOW):
    """(sigma index, shape, estimated bits) per context: the parametric candidate with the fewest bits, sigma
    searched within `window` indices of the context's RMS."""
    K = H.shape[0]
    bits = shape_bits(lo, hi)
    n = H.sum(1)
    xs = np.arange(lo, hi + 1, dtype=np.float64)
    ms = (H @ (xs * xs)) / np.maximum(n, 1) + 0.25
    s0 = np.clip(np.round(4.0 * np.log2(ms)).astype(np.int64), S_MIN + window, S_MAX - window)
    sidx = s0[:, None] + np.arange(-window, window + 1)[None, :] - S_MIN                  # [K, W]
    cost = np.einsum("kwla,ka->kwl", bits.get(sidx), H.astype(np.float64))             # [K, W, N_SHAPES]
    flat = cost.reshape(K, -1)
    j = flat.argmin(1)
    best = flat[np.arange(K), j]
    w, shp = np.divmod(j, N_SHAPES)
    sig = sidx[np.arange(K), w] + S_MIN
    empty = n == 0                                           # empty contexts copy a neighbour: cheap sides
    if empty.any() and not empty.all():
        full = np.flatnonzero(~empty)
        near = full[np.abs(full[None, :] - np.arange(K)[:, None]).argmin(1)]
        sig, shp = np.where(empty, sig[near], sig), np.where(empty, shp[near], shp)
    return sig.astype(np.int64), shp.astype(np.int64), best


def _side_guess(v: np.ndarray) -> float:
    """A quick estimate of a side array's bytes (order-0 entropy + its counts), for ranking variants."""
    if v.size == 0:
        return 2.0
    n = np.bincount(v - v.min())
    n = n[n > 0]
    if n.size == 1:
        return 2.0
    return float(-(n * np.log2(n / v.size)).sum()) / 8 + 1.5 * n.size + 3


def _side_bytes(v: np.ndarray) -> float:
    p = io.plan_side(v)
    b = io.side_header_bytes(p)
    if p.kind != io.SIDE_CONST and len(v):
        b += io.trial_bits(p.symbols(v), p.model()) / 8
    return b


def _empirical_bits(H: np.ndarray) -> np.ndarray:
    n = H.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(H > 0, H * np.log2(H / np.maximum(n, 1)), 0.0).sum(1)


TABLE_WIDTHS = (1, 2, 3, 4, 6, 8, 16, 32, 64)
TABLE_MIN_GAIN_BITS = 24.0      # a stored table is only considered where it could save this much


@functools.lru_cache(maxsize=256)
def _bins(lo: int, hi: int, fold: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return fit.bin_layout(lo, hi, bool(fold), width)


def _binned(tables: np.ndarray, bins: np.ndarray, nbins: int) -> np.ndarray:
    """Counts per bin of each table (float matmul of integer counts: exact below 2^53)."""
    onehot = np.zeros((bins.size, nbins))
    onehot[np.arange(bins.size), bins] = 1.0
    return np.rint(tables.astype(np.float64) @ onehot).astype(np.int64)


def _table_layout(tables: np.ndarray, lo: int, hi: int) -> tuple[int, int, int]:
    """(fold, width, precision) with the fewest bits of counts and data: bin layouts ranked by their binned
    entropy plus about 1.5 bytes per stored count, every nearby precision tried on the best two (the
    encoder's quick fit.choose_table_layout)."""
    n = np.maximum(tables.sum(1, keepdims=True), 1).astype(np.float64)
    n_max = int(n.max())
    precs = [p for p in range(6, 21, 2) if (1 << p) < 4 * n_max] or [6]
    k = len(precs) // 2
    ranked = []
    for fold in (0, 1):
        for width in TABLE_WIDTHS:
            if width > hi - lo + 1:
                break
            bins, sizes = _bins(lo, hi, fold, width)
            binned = _binned(tables, bins, sizes.size)
            with np.errstate(divide="ignore", invalid="ignore"):
                ent = np.where(binned > 0, binned * (np.log2(sizes)[None, :] - np.log2(binned / n)), 0.0).sum()
            ranked.append((ent + 12.0 * binned.shape[0] * sizes.size, fold, width, binned, sizes))
    ranked.sort(key=lambda t: (t[0], t[1], t[2]))
    best, best_bits = None, math.inf
    for _, fold, width, binned, sizes in ranked[:2]:
        for prec in precs[max(0, k - 2):k + 3]:
            bits = fit.layout_bits(binned, sizes, prec)
            if bits < best_bits - 1e-9:
                best, best_bits = (fold, width, prec), bits
    return best


def _choose_tables(H: np.ndarray, param_bits: np.ndarray, lo: int, hi: int):
    """(contexts, layout, counts, bytes) of the stored tables worth their counts: contexts whose parametric
    fit loses enough against their own histogram, kept only if the tables cost less than they save."""
    n = H.sum(1)
    penalty = (H > 0).sum(1) * np.log2(np.maximum(n, 2)) / 16     # a binned table costs at least this, roughly
    cand = np.flatnonzero(param_bits - _empirical_bits(H) > penalty + TABLE_MIN_GAIN_BITS).tolist()
    if not cand:
        return (), (0, 1, 0), (), 0.0
    layout = _table_layout(H[cand], lo, hi)
    bins, sizes = _bins(lo, hi, layout[0], layout[1])
    binned = _binned(H[cand], bins, sizes.size)
    q = fit.quantize_counts(binned, layout[2])
    logp = np.log2(np.maximum(q, 1) / np.maximum(q.sum(1, keepdims=True), 1))
    data = np.where(binned > 0, binned * (np.log2(sizes)[None, :] - logp), 0.0).sum(1)
    store = 8.0 * fit.varint_len(q).sum(1) + 8.0
    keep = [i for i in range(len(cand)) if data[i] + store[i] < param_bits[cand[i]]]
    if not keep:
        return (), (0, 1, 0), (), 0.0
    chosen = tuple(cand[i] for i in keep)
    total = float(data[keep].sum() + store[keep].sum()) / 8 + 3
    return chosen, layout, tuple(tuple(int(c) for c in q[i]) for i in keep), total


def _variant(Hf, r8, c8, lo, hi, row_step, col_step, final: bool):
    """(estimated bytes, GridFit parts) of one grouping (row / column group = fine group // step). Ranking
    estimates (final False) use a narrow sigma search, no stored tables and guessed side bytes."""
    ru = np.arange(Hf.shape[0]) // row_step if row_step else np.zeros(Hf.shape[0], np.int64)
    cv = np.arange(Hf.shape[1]) // col_step if col_step else np.zeros(Hf.shape[1], np.int64)
    H = _ctx_hist(Hf, ru, cv)
    sig, shp, bits = _best_params(H, lo, hi, SIGMA_WINDOW if final else 1)
    tabs = _choose_tables(H, bits, lo, hi) if final else ((), (0, 1, 0), (), 0.0)
    in_table = np.zeros(H.shape[0], bool)
    in_table[list(tabs[0])] = True
    data = bits[~in_table].sum() / 8 + tabs[3]
    side = _side_bytes if final else _side_guess
    rows, cols = ru[r8], cv[c8]
    ps, pl = sig[~in_table], shp[~in_table]
    total = data + 10 + (side(rows) if rows.max(initial=0) > 0 else 0) + \
        (side(cols) if cols.max(initial=0) > 0 else 0) + (side(ps) + side(pl) if ps.size > 1 else 2 * ps.size)
    return total, (rows, cols, tabs, sig[~in_table], shp[~in_table])


def _steps_for(n: int) -> tuple:
    """Group widths tried: fewer on small tensors, where each trial costs more than it can save."""
    return (2, 8) if n < 1 << 14 else FIT_STEPS


def search(X: np.ndarray, lo: int, hi: int, steps: tuple | None = None, finalists: int = 2,
           exhaustive: bool = False) -> tuple[float, GridFit]:
    """The grid fit with the fewest estimated bytes. Row / column group widths (`steps`, or none) are ranked
    by quick estimates (a coordinate search: rows, then columns, then rows again; every pair if
    `exhaustive`), and the best `finalists` are estimated in full, stored tables considered."""
    R, C = X.shape
    A = hi - lo + 1
    r8, c8 = fine_groups(X)
    if R < 2:
        r8 = np.zeros(R, np.int64)
    if C < 2:
        c8 = np.zeros(C, np.int64)
    Hf = fine_histogram(X, r8, c8, lo, A)
    steps = _steps_for(X.size) if steps is None else steps
    rsteps = (0, *steps) if r8.max(initial=0) > 0 else (0,)
    csteps = (0, *steps) if c8.max(initial=0) > 0 else (0,)
    seen: dict = {}

    def rank(rs, cs):
        if (rs, cs) not in seen:
            nu = int(r8.max(initial=0)) // rs + 1 if rs else 1
            nv = int(c8.max(initial=0)) // cs + 1 if cs else 1
            ok = nu + nv - 1 <= MAX_CONTEXTS
            seen[(rs, cs)] = _variant(Hf, r8, c8, lo, hi, rs, cs, False)[0] if ok else math.inf
        return seen[(rs, cs)]

    if exhaustive:
        for rs in rsteps:
            for cs in csteps:
                rank(rs, cs)
    else:
        rs = min(rsteps, key=lambda v: (rank(v, 0), v))
        cs = min(csteps, key=lambda v: (rank(rs, v), v))
        min(rsteps, key=lambda v: (rank(v, cs), v))
    ranked = sorted((est, rs, cs) for (rs, cs), est in seen.items() if est < math.inf)
    best = None
    for _, rs, cs in ranked[:finalists]:
        est, parts = _variant(Hf, r8, c8, lo, hi, rs, cs, True)
        if best is None or est < best[0] - 1e-9:
            best = (est, parts)
    est, (rows, cols, tabs, sig, shp) = best
    K = int(rows.max(initial=0)) + int(cols.max(initial=0)) + 1
    return est, GridFit(rows, cols, tuple_size(A, X.size), K, tabs[0], tabs[1], tabs[2], sig, shp)


def worth_searching(X: np.ndarray) -> bool:
    """Whether a few evenly spaced rows are well correlated (|corr| >= PROBE_CORR) with some earlier row: a
    probe of PROBE_ROWS x R x C multiply-adds, so that matrices without near-copies pay next to nothing."""
    R, C = X.shape
    if R < 8 or C < 8 or R > fit.MAX_CLUSTER_ROWS:
        return False
    probe = np.unique(np.linspace(1, R - 1, min(PROBE_ROWS, R - 1)).astype(np.int64))
    amax = int(np.abs(X.astype(np.int32)).max())
    F = X.astype(np.float32 if amax * amax * C < (1 << 24) else np.float64)     # exact integer products
    sq = np.einsum("ij,ij->i", F, F, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (F[probe] @ F.T).astype(np.float64) / np.sqrt(sq[probe, None] * sq[None, :])
    corr[~np.isfinite(corr)] = 0.0
    corr[probe[:, None] <= np.arange(R)[None, :]] = 0.0                           # earlier rows only
    return int((corr.max(1) >= PROBE_CORR).sum()) >= PROBE_MIN_HITS


def fit_refs(X: np.ndarray, lo: int, hi: int, parent: np.ndarray | None = None) -> Refs | None:
    """References for rows whose residual against their best earlier row has under half their energy."""
    R = X.shape[0]
    if parent is None:
        parent = fit.find_parents(X)
    cand = np.flatnonzero(parent >= 0)
    if not cand.size:
        return None
    xp = X[parent[cand]].astype(np.float64)
    xc = X[cand].astype(np.float64)
    beta = np.clip(np.rint(16 * (xc * xp).sum(1) / np.maximum((xp * xp).sum(1), 1)), 1, MAX_BETA).astype(np.int64)
    d = X[cand].astype(np.int32) - predict(X[parent[cand]], beta, lo, hi)
    keep = (d.astype(np.float64) ** 2).sum(1) < 0.5 * (xc * xc).sum(1)
    if not keep.any() or keep.sum() >= R:
        return None
    par = np.full(R, -1, np.int64)
    par[cand[keep]] = parent[cand[keep]]
    # a kept row's parent may have been dropped as a reference: it is then a base row, which is fine; rows
    # deeper than MAX_WAVES references become base rows (ascending order: parents are settled first)
    depth = np.zeros(R, np.int64)
    for i in cand[keep].tolist():
        depth[i] = depth[par[i]] + 1
        if depth[i] > MAX_WAVES:
            par[i], depth[i] = -1, 0
    if not (par >= 0).any():
        return None
    return Refs(par, beta[keep][par[cand[keep]] >= 0])


# --- writing the blobs ----------------------------------------------------------------------------------------
def _grid_sides(gf: GridFit) -> list[tuple[str, np.ndarray, io.SideArray]]:
    """The side arrays a blob codes in its stream, in stream order: (name, values, plan)."""
    out = []
    if gf.rows.max(initial=0) > 0:
        out.append(("row groups", gf.rows))
    if gf.cols.max(initial=0) > 0:
        out.append(("column groups", gf.cols))
    if len(gf.sigma) > 1:
        out += [("sigmas", gf.sigma), ("shapes", gf.shape)]
    return [(n, v, io.plan_side(v)) for n, v in out]


def _header(gf: GridFit, lo: int, hi: int, sides) -> io.BlobWriter:
    w = io.header(io.MODEL_GRID, lo, hi)
    K = gf.contexts
    w.u8((gf.g - 1) | (FLAG_ROWS if gf.rows.max(initial=0) > 0 else 0) |
         (FLAG_COLS if gf.cols.max(initial=0) > 0 else 0) | (FLAG_TABLES if gf.table_ctx else 0))
    plans = {n: p for n, _, p in sides}
    for name in ("row groups", "column groups"):
        if name in plans:
            io.write_side(w, plans[name])
    if gf.table_ctx:
        w.u8(len(gf.table_ctx))
        if len(gf.table_ctx) < K:
            for k in gf.table_ctx:
                w.u8(k)
        for v in gf.layout:
            w.u8(v)
        for q in gf.table_counts:
            for c in q:
                w.varint(int(c))
    if len(gf.sigma) == 1:
        w.u8(int(gf.sigma[0]) - S_MIN)
        w.u8(int(gf.shape[0]))
    elif len(gf.sigma) > 1:
        io.write_side(w, plans["sigmas"])
        io.write_side(w, plans["shapes"])
    return w


def _tuples(codes: np.ndarray, g: int, lo: int, A: int) -> tuple[np.ndarray, np.ndarray]:
    """(tuple symbols of the first n - n % g codes, single symbols of the rest)."""
    n = codes.size
    m = n - n % g
    sym = codes.astype(np.int32) - np.int32(lo)
    if g == 1:
        return sym, sym[:0]
    t = sym[:m].reshape(-1, g)
    y = t[:, 0].copy()
    for j in range(1, g):
        y *= np.int32(A)
        y += t[:, j]
    return y, sym[m:]


def encode_grid(X: np.ndarray, lo: int, hi: int, gf: GridFit) -> bytes:
    A = hi - lo + 1
    sides = _grid_sides(gf)
    w = _header(gf, lo, hi, sides)
    ro, co, blocks = block_order(gf.rows, gf.cols)
    P = X[ro] if ro.size > 1 and np.any(np.diff(ro) != 1) else X
    if co.size > 1 and np.any(np.diff(co) != 1):
        P = np.take(P, co, axis=1)
    single, tup = context_models(gf, lo, hi, {b[4] for b in blocks})
    coder = Ans()
    io.encode_sentinel(coder)
    for r0, r1, c0, c1, k in reversed(blocks):
        y, rest = _tuples(np.ascontiguousarray(P[r0:r1, c0:c1]).reshape(-1), gf.g, lo, A)
        if rest.size:
            coder.encode_reverse(rest, single[k])
        if y.size:
            coder.encode_reverse(y, tup[k] if gf.g > 1 else single[k])
    for _, v, p in reversed(sides):
        if p.kind != io.SIDE_CONST:
            coder.encode_reverse(p.symbols(v), p.model())
    return io.finish(w, coder)


def wrap(d: np.ndarray, A: int) -> np.ndarray:
    """Residual d (int32) folded into [-(A // 2), A - 1 - A // 2]."""
    h = A // 2
    return ((d + h) % A - h).astype(np.int8)


def residuals(X: np.ndarray, refs: Refs, lo: int, hi: int) -> np.ndarray:
    rows = np.flatnonzero(refs.parent >= 0)
    pred = predict(X[refs.parent[rows]], refs.beta16, lo, hi)
    return wrap(X[rows].astype(np.int32) - pred, hi - lo + 1)


def _refs_sides(refs: Refs):
    rows = np.flatnonzero(refs.parent >= 0)
    flags = (refs.parent >= 0).astype(np.int64)
    out = [(flags, io.SideArray(0, 1, io.SIDE_CAT, counts=(int(flags.size - rows.size), int(rows.size))))]
    return out + [(v, io.plan_side(v)) for v in (rows - refs.parent[rows], refs.beta16.astype(np.int64))]


def encode_parts(refs: Refs, base_blob: bytes, resid_blob: bytes, lo: int, hi: int) -> bytes:
    sides = _refs_sides(refs)
    w = io.BlobWriter()
    for _, p in sides:
        io.write_side(w, p)
    coder = Ans()
    io.encode_sentinel(coder)
    for v, p in reversed(sides):
        if p.kind != io.SIDE_CONST and len(v):
            coder.encode_reverse(p.symbols(v), p.model())
    side_part = io.finish(w, coder)
    out = io.header(io.MODEL_REFS, lo, hi)
    out.varint(len(side_part))
    out.buf += side_part
    out.varint(len(base_blob))
    out.buf += base_blob
    out.buf += resid_blob
    return bytes(out.buf)
