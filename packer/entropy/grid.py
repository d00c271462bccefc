"""The `grid` ANS model (model 3): codes in context (row group + column group), one parametric or stored
distribution per context, coded block by block with several codes per symbol (few vectorised constriction
calls per tensor). Layout and the exact weights: FORMAT.md "The `ans` blob"; the encoder is grid_encode.py.
Must not import torch.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import constriction
import numpy as np

from common.errors import CodecError
from packer.entropy import blob as io
from packer.entropy import exact

MAX_GROUPS = 64                 # row groups and column groups each
MAX_CONTEXTS = 64               # a + b spans at most this many contexts
S_MIN, S_MAX = -24, 88          # sigma index s: sigma = 2^(s/8) (exact.sigma_for_index), 0.125 .. 2048
N_BLEND = 9                     # shape l: blend (l mod 9)/8 of Laplace into Gaussian; l >= 9 lumps the tails
N_SHAPES = 2 * N_BLEND
TUPLE_CELLS = 4096              # g codes per symbol only while A^g stays within this
MAX_TUPLE = 4
FLOOR = 2.0 ** -400             # weights never fall below this: products of two stay normal floats
EXT = 255                       # weights are defined for |x| <= EXT; lumped tails run to it
SQRT2 = 1.4142135623730951
Ans = constriction.stream.stack.AnsCoder


# --- the parametric weights (encoder and decoder) ------------------------------------------------------------
def _exp_neg(h: np.ndarray) -> np.ndarray:
    """exp(-h) as (1 - h/2^20)^(2^20): twenty squarings, exact IEEE products, so bit-identical everywhere."""
    q = 1.0 - np.ldexp(np.asarray(h, np.float64), -20)
    for _ in range(20):
        q = q * q
    return q


@functools.lru_cache(maxsize=1)
def _weight_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w [EXT + 1, n], below [2 EXT + 1, n], above [2 EXT + 1, n]) for the n = (S_MAX - S_MIN + 1) * N_BLEND
    (sigma, blend) pairs, computed once: w(x) = q1^x q2^(x^2); below[x + EXT] = the sum of w(|t|) for t from
    -EXT up to x - 1, ascending; above[x + EXT] = the sum for t from EXT down to x + 1, descending."""
    s = np.repeat(np.arange(S_MIN, S_MAX + 1), N_BLEND)
    lam = np.tile(np.arange(N_BLEND, dtype=np.float64) / (N_BLEND - 1), S_MAX - S_MIN + 1)
    sig = exact.sigma_for_index(s)
    q1 = _exp_neg(lam * SQRT2 / sig)
    q2 = _exp_neg((1.0 - lam) / (2.0 * sig * sig))
    w = np.empty((EXT + 1, s.size))
    cur, step, q22 = np.ones(s.size), q1 * q2, q2 * q2
    for x in range(EXT + 1):                         # fixed order: one IEEE operation per step
        w[x] = cur
        cur = np.maximum(cur * step, FLOOR)
        step = np.maximum(step * q22, FLOOR)
    below = np.zeros((2 * EXT + 1, s.size))
    above = np.zeros((2 * EXT + 1, s.size))
    for i in range(1, 2 * EXT + 1):                  # index i is x = i - EXT: the tails of every range edge
        below[i] = below[i - 1] + w[abs(i - 1 - EXT)]
    for i in range(2 * EXT - 1, -1, -1):
        above[i] = above[i + 1] + w[abs(i + 1 - EXT)]
    return w, below, above


@functools.lru_cache(maxsize=32)
def shape_weights(lo: int, hi: int) -> np.ndarray:
    """Read-only float64 weights [S_MAX - S_MIN + 1, N_SHAPES, hi - lo + 1] of every (sigma, shape) pair:
    w(|x|), and for the lumped shapes the tails beyond lo and hi (to |x| = EXT) added to the edge codes."""
    w, below, above = _weight_table()
    plain = w[np.abs(np.arange(lo, hi + 1))]         # [A, n]
    lumped = plain.copy()
    lumped[0] = lumped[0] + below[lo + EXT]
    lumped[-1] = lumped[-1] + above[hi + EXT]
    out = np.stack([plain.T, lumped.T], 1)           # [n, 2, A]
    out = out.reshape(S_MAX - S_MIN + 1, N_BLEND, 2, -1).transpose(0, 2, 1, 3).reshape(
        S_MAX - S_MIN + 1, N_SHAPES, -1)
    out = np.ascontiguousarray(out)
    out.setflags(write=False)
    return out


def _tuple_weights(p: np.ndarray, g: int) -> np.ndarray:
    out = p
    for _ in range(g - 1):
        out = (out[:, None] * p[None, :]).reshape(-1)
    return out


def _split_lut(A: int, g: int, lo: int) -> np.ndarray:
    """Little-endian uint16 (g = 2) or uint32 (g = 3, 4) whose bytes are the g int8 codes of each tuple
    symbol, first code first: np.take(lut, symbols).view(np.int8) spells the codes out."""
    idx = np.arange(A ** g, dtype=np.int64)
    word = np.zeros(idx.size, np.int64)
    for j in range(g - 1, -1, -1):                   # last code is the least significant base-A digit
        idx, d = np.divmod(idx, A)
        word |= ((d + lo) & 0xFF) << (8 * j)
    return word.astype("<u2" if g == 2 else "<u4")


def _spell(lut: np.ndarray, g: int, y: np.ndarray) -> np.ndarray:
    b = np.take(lut, y).view(np.int8)
    return b.reshape(-1, 4)[:, :3].reshape(-1) if g == 3 else b


# --- layout ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridFit:
    """What a grid blob stores: groups, tuple size, stored tables and per-context parameters."""

    rows: np.ndarray                    # [R] row group, 0..U-1
    cols: np.ndarray                    # [C] column group, 0..V-1
    g: int
    contexts: int                       # K: contexts 0..K-1 (the header's group ranges, not the values)
    table_ctx: tuple[int, ...] = ()     # contexts with a stored table, ascending
    layout: tuple[int, int, int] = (0, 1, 0)   # fold, width, precision of the stored tables
    table_counts: tuple = ()            # per stored table: quantized bin counts
    sigma: np.ndarray | None = None     # [K - T] sigma index of the parametric contexts (ascending context)
    shape: np.ndarray | None = None     # [K - T] shape index


def context_weights(gf: GridFit, lo: int, hi: int) -> list[np.ndarray]:
    """Float64 weights per context (exactly what encoder and decoder give constriction)."""
    K = gf.contexts
    out: list[np.ndarray | None] = [None] * K
    bins, sizes = exact.bin_layout(lo, hi, bool(gf.layout[0]), gf.layout[1])
    for k, q in zip(gf.table_ctx, gf.table_counts):
        out[k] = exact.table_probabilities(np.asarray(q, np.int64), bins, sizes)
    params = [k for k in range(K) if out[k] is None]
    W = shape_weights(lo, hi)
    for k, s, l in zip(params, gf.sigma.tolist(), gf.shape.tolist()):
        out[k] = W[s - S_MIN, l]
    return out


def context_models(gf: GridFit, lo: int, hi: int, used: set[int]):
    """(single-code, tuple) constriction models of the contexts in `used`."""
    cat = constriction.stream.model.Categorical
    weights = context_weights(gf, lo, hi)
    single, tup = {}, {}
    try:
        for k in sorted(used):
            single[k] = cat(weights[k], perfect=False)
            if gf.g > 1:
                tup[k] = cat(_tuple_weights(weights[k], gf.g), perfect=False)
    except Exception as exc:  # noqa: BLE001 - constriction raises plain built-in exception types
        raise CodecError(f"grid: context {k}'s distribution is rejected by the coder ({exc}); corrupt section") from None
    return single, tup


def block_order(rows: np.ndarray, cols: np.ndarray):
    """(row order, column order, [(r0, r1, c0, c1, context)]) of the non-empty blocks in stream order."""
    ro = np.argsort(rows, kind="stable")
    co = np.argsort(cols, kind="stable")
    rn = np.bincount(rows)
    cn = np.bincount(cols)
    re_ = np.concatenate([[0], np.cumsum(rn)])
    ce = np.concatenate([[0], np.cumsum(cn)])
    out = []
    for u in np.flatnonzero(rn).tolist():
        for v in np.flatnonzero(cn).tolist():
            out.append((int(re_[u]), int(re_[u + 1]), int(ce[v]), int(ce[v + 1]), u + v))
    return ro, co, out


FLAG_ROWS, FLAG_COLS, FLAG_TABLES = 4, 8, 16


def _group_side(r: io.BlobReader, field: str, n: int) -> io.SideArray:
    p = io.read_side(r, field, n)
    if p.lo != 0 or not 1 <= p.hi < MAX_GROUPS:
        raise r._fail(field, f"groups span [{p.lo}, {p.hi}]; flagged groups start at 0 and end in "
                             f"1..{MAX_GROUPS - 1}")
    return p


def read_header(r: io.BlobReader, lo: int, hi: int, R: int, C: int):
    """Header of a grid blob: (g, [(name, length, plan)] of the stream's side arrays, table contexts, layout,
    table counts, K, the single parametric context's (sigma, shape) or None)."""
    A = hi - lo + 1
    flags = r.u8("grid.flags")
    g = (flags & 3) + 1
    if flags & ~(3 | FLAG_ROWS | FLAG_COLS | FLAG_TABLES):
        raise r._fail("grid.flags", f"unknown flags {flags:#x}")
    if g > 1 and A ** g > TUPLE_CELLS:
        raise r._fail("grid.flags", f"{g} codes per symbol with {A} codes (A^g must stay within {TUPLE_CELLS})")
    sides = []
    prow = _group_side(r, "grid.rows", R) if flags & FLAG_ROWS else None
    pcol = _group_side(r, "grid.cols", C) if flags & FLAG_COLS else None
    if prow is not None:
        sides.append(("row groups", R, prow))
    if pcol is not None:
        sides.append(("column groups", C, pcol))
    K = (prow.hi if prow else 0) + (pcol.hi if pcol else 0) + 1
    if K > MAX_CONTEXTS:
        raise r._fail("grid.contexts", f"{K} contexts (at most {MAX_CONTEXTS})")
    table_ctx, layout, counts = (), (0, 1, 0), ()
    if flags & FLAG_TABLES:
        T = r.u8("grid.tables")
        if not 1 <= T <= K:
            raise r._fail("grid.tables", f"{T} stored tables for {K} contexts")
        table_ctx = tuple(r.u8("grid.table_context") for _ in range(T)) if T < K else tuple(range(K))
        if any(b <= a for a, b in itertools.pairwise(table_ctx)) or table_ctx[-1] >= K:
            raise r._fail("grid.table_context", f"table contexts {list(table_ctx)} are not ascending below {K}")
        layout = (r.u8("grid.fold"), r.u8("grid.width"), r.u8("grid.precision"))
        if layout[0] > 1 or layout[1] == 0 or layout[2] > 40:
            raise r._fail("grid.layout", f"fold {layout[0]}, bin width {layout[1]}, precision {layout[2]}")
        _, sizes = exact.bin_layout(lo, hi, bool(layout[0]), layout[1])
        tabs = []
        for _ in range(T):
            q = tuple(r.varint("grid.count", io.MAX_COUNT) for _ in range(sizes.size))
            if sum(q) <= 0:
                raise r._fail("grid.count", "a stored table with no mass")
            tabs.append(q)
        counts = tuple(tabs)
    P = K - len(table_ctx)
    single = None
    if P == 1:
        single = (r.u8("grid.sigma") + S_MIN, r.u8("grid.shape"))
        if single[0] > S_MAX or single[1] >= N_SHAPES:
            raise r._fail("grid.sigma", f"sigma index {single[0]} / shape {single[1]} outside "
                                        f"[{S_MIN}, {S_MAX}] / [0, {N_SHAPES - 1}]")
    elif P > 1:
        psig = io.read_side(r, "grid.sigma", P)
        pshape = io.read_side(r, "grid.shape", P)
        if psig.lo < S_MIN or psig.hi > S_MAX:
            raise r._fail("grid.sigma", f"sigma indices span [{psig.lo}, {psig.hi}], outside [{S_MIN}, {S_MAX}]")
        if pshape.lo < 0 or pshape.hi >= N_SHAPES:
            raise r._fail("grid.shape", f"shape indices span [{pshape.lo}, {pshape.hi}], outside "
                                        f"[0, {N_SHAPES - 1}]")
        sides += [("sigmas", P, psig), ("shapes", P, pshape)]
    return g, sides, table_ctx, layout, counts, K, single


def read_fit(r: io.BlobReader, lo: int, hi: int, R: int, C: int, what: str):
    """(GridFit, coder positioned at the codes, side bits) of a grid blob."""
    g, sides, table_ctx, layout, counts, K, single = read_header(r, lo, hi, R, C)
    coder = io.new_decoder(r.words(), what)
    start = coder.num_valid_bits()
    vals = {}
    for name, n, p in sides:
        if p.kind == io.SIDE_CAT and sum(p.counts) != n:
            raise CodecError(f"{what}: grid {name} counts sum to {sum(p.counts)}, expected {n}; corrupt section")
        vals[name] = io.decode_side(coder, p, n, f"{what} {name}")
    if single is not None:
        vals["sigmas"], vals["shapes"] = np.array([single[0]], np.int64), np.array([single[1]], np.int64)
    empty = np.zeros(0, np.int64)
    gf = GridFit(vals.get("row groups", np.zeros(R, np.int64)), vals.get("column groups", np.zeros(C, np.int64)),
                 g, K, table_ctx, layout, counts, vals.get("sigmas", empty), vals.get("shapes", empty))
    return gf, coder, start - coder.num_valid_bits()


def decode(r: io.BlobReader, lo: int, hi: int, R: int, C: int, what: str) -> np.ndarray:
    gf, coder, _ = read_fit(r, lo, hi, R, C, what)
    A = hi - lo + 1
    ro, co, blocks = block_order(gf.rows, gf.cols)
    single, tup = context_models(gf, lo, hi, {b[4] for b in blocks})
    lut = _split_lut(A, gf.g, lo) if gf.g > 1 else None
    P = np.empty((R, C), np.int8)
    lo32 = np.int32(lo)
    for r0, r1, c0, c1, k in blocks:
        n = (r1 - r0) * (c1 - c0)
        m = n - n % gf.g
        parts = []
        if m:
            y = io.guarded_decode(coder, what, tup[k] if gf.g > 1 else single[k], m // gf.g)
            parts.append(_spell(lut, gf.g, y) if gf.g > 1 else (y + lo32).astype(np.int8))
        if n > m:
            parts.append((io.guarded_decode(coder, what, single[k], n - m) + lo32).astype(np.int8))
        P[r0:r1, c0:c1] = (parts[0] if len(parts) == 1 else np.concatenate(parts)).reshape(r1 - r0, c1 - c0)
    io.check_sentinel(coder, what)
    io.finish_decoder(coder, what)
    if co.size > 1 and np.any(np.diff(co) != 1):
        out = np.empty_like(P)
        out[:, co] = P
        P = out
    if ro.size > 1 and np.any(np.diff(ro) != 1):
        out = np.empty_like(P)
        out[ro] = P
        P = out
    return P


def describe_name(gf: GridFit) -> str:
    parts = ["grid"]
    if gf.rows.max(initial=0) > 0:
        parts.append("row")
    if gf.cols.max(initial=0) > 0:
        parts.append("col")
    if gf.table_ctx:
        parts.append(f"tables{len(gf.table_ctx)}")
    if gf.g > 1:
        parts.append(f"x{gf.g}")
    return "-".join(parts)
