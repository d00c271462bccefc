"""The `param` ANS model: constriction's QuantizedGaussian / QuantizedLaplace with per-code parameters.

sigma = 2^((a_i + b_j)/8) from per-row and per-column grid indices, mean = m_j/4 per column, and rows that
are near-copies of an earlier row predicted from it (mean = round(beta_i/16 * x_parent), own sigma), every
side array coded in the same ANS stream ahead of the codes. Owns this model's blob layout (FORMAT.md "The
`ans` blob", model 2), its exact bounded decoder, and the encoder-side search over its variants (fitted with
packer.entropy.fit, ranked by estimated bytes). Must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from common.errors import CodecError
from packer.entropy import blob as io
from packer.entropy import fit

FLAG_COL_SIGMA, FLAG_COL_MEAN, FLAG_REFS = 1, 2, 4
DECODE_CHUNK = 1 << 21          # symbols per constriction call (bounds the per-symbol parameter arrays)
PARAM_TRIALS = 2                # variants encoded for real, best estimates first (1 for big tensors)
Ans = constriction.stream.stack.AnsCoder


@dataclass(frozen=True)
class ParamFit:
    """Parameters of a param blob. Base rows (parent -1) decode first, sigma index a_base + b, mean m4 / 4;
    then predicted rows in waves (a row after its parent), mean round(beta16/16 * parent row), sigma a_ref."""

    shape: str
    a_base: np.ndarray                  # sigma index per base row
    b: np.ndarray | None = None         # per-column sigma offset
    m4: np.ndarray | None = None        # per-column mean, quarter code units
    parent: np.ndarray | None = None    # [R]: -1 = base row, else the earlier row it is predicted from
    a_ref: np.ndarray | None = None     # per predicted row (row order)
    beta16: np.ndarray | None = None

    def side_arrays(self) -> list[tuple[str, np.ndarray]]:
        refs = self.parent is not None
        out = []
        if refs:
            rows = np.flatnonzero(self.parent >= 0)
            out += [("ref flags", (self.parent >= 0).astype(np.int64)), ("ref deltas", rows - self.parent[rows])]
        out.append(("row sigmas", self.a_base))
        if self.b is not None:
            out.append(("column sigmas", self.b))
        if self.m4 is not None:
            out.append(("column means", self.m4))
        if refs:
            out += [("ref sigmas", self.a_ref), ("ref betas", self.beta16)]
        return out


def _param_model(shape: str, lo: int, hi: int):
    cls = constriction.stream.model.QuantizedGaussian if shape == "gauss" else \
        constriction.stream.model.QuantizedLaplace
    return cls(lo, hi)


def _base_params(pf: ParamFit, C: int):
    b = pf.b if pf.b is not None else np.zeros(C, np.int64)
    m4 = pf.m4 if pf.m4 is not None else np.zeros(C, np.int64)
    return b, m4


def _chunks(n_rows: int, C: int):
    step = max(1, DECODE_CHUNK // max(C, 1))
    return [(i, min(n_rows, i + step)) for i in range(0, n_rows, step)]


def _wave_rows(parent: np.ndarray | None, R: int) -> list[np.ndarray]:
    """Rows in decode order: [base rows, wave-1 rows, wave-2 rows, ...], each ascending."""
    if parent is None:
        return [np.arange(R)]
    wave = fit.ref_waves(parent)
    return [np.flatnonzero(wave == w) for w in range(int(wave.max()) + 1)]


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


def _ref_chunks(pf: ParamFit, waves: list[np.ndarray], C: int):
    """(rows, ref index range) per constriction call for the predicted rows, in decode order."""
    ref_pos = np.cumsum(pf.parent >= 0) - 1 if pf.parent is not None else None
    for rows in waves[1:]:
        for i0, i1 in _chunks(rows.size, C):
            yield rows[i0:i1], ref_pos[rows[i0:i1]]


def _ref_params(pf: ParamFit, rows, idx, decoded: np.ndarray, lo: int, hi: int):
    mu = fit.ref_means4(pf.beta16[idx], decoded[pf.parent[rows]], lo, hi) / 4.0
    sig = np.broadcast_to(fit.sigma_for_index(pf.a_ref[idx])[:, None], mu.shape)
    return mu.reshape(-1), np.ascontiguousarray(sig).reshape(-1)


def encode(X: np.ndarray, lo: int, hi: int, pf: ParamFit) -> bytes:
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


def read_sides(r: io.BlobReader, R: int, C: int, what: str):
    """Header + side arrays of a param blob: (ParamFit, coder positioned at the codes, side bits)."""
    shape_id = r.u8("param.shape")
    if shape_id >= len(fit.SHAPES):
        raise r._fail("param.shape", f"unknown distribution {shape_id}")
    flags = r.u8("param.flags")
    if flags & ~(FLAG_COL_SIGMA | FLAG_COL_MEAN | FLAG_REFS):
        raise r._fail("param.flags", f"unknown flags {flags:#x}")
    refs = bool(flags & FLAG_REFS)
    names = (["ref flags", "ref deltas"] if refs else []) + ["row sigmas"] + \
        (["column sigmas"] if flags & FLAG_COL_SIGMA else []) + (["column means"] if flags & FLAG_COL_MEAN else []) + \
        (["ref sigmas", "ref betas"] if refs else [])
    plans = [io.read_side(r, "param." + n.replace(" ", "_"), R if n == "ref flags" else None) for n in names]
    coder = io.new_decoder(r.words(), what)
    start_bits = coder.num_valid_bits()
    vals: dict[str, np.ndarray] = {}
    flag = np.zeros(R, np.int64)
    for name, plan in zip(names, plans):
        n_ref = int(flag.sum())
        n = {"ref flags": R, "ref deltas": n_ref, "row sigmas": R - n_ref, "ref sigmas": n_ref,
             "ref betas": n_ref}.get(name, C)
        if plan.kind == io.SIDE_CAT and sum(plan.counts) != n:
            raise CodecError(f"{what}: {name} counts sum to {sum(plan.counts)}, expected {n}; corrupt section")
        vals[name] = io.decode_side(coder, plan, n, f"{what} {name}")
        if name == "ref flags":
            flag = vals[name]
            io.check_range(flag, 0, 1, name, what)
    parent = None
    if refs:
        rows = np.flatnonzero(flag)
        parent = np.full(R, -1, np.int64)
        parent[rows] = rows - vals["ref deltas"]
        if rows.size and (np.any(vals["ref deltas"] < 1) or np.any(parent[rows] < 0)):
            raise CodecError(f"{what}: a predicted row points at a row that does not precede it; corrupt section")
    pf = ParamFit(fit.SHAPES[shape_id], vals["row sigmas"], vals.get("column sigmas"), vals.get("column means"),
                  parent, vals.get("ref sigmas"), vals.get("ref betas"))
    return pf, coder, start_bits - coder.num_valid_bits()


def decode(r: io.BlobReader, lo: int, hi: int, R: int, C: int, what: str) -> np.ndarray:
    pf, coder, _ = read_sides(r, R, C, what)
    b, m4 = _base_params(pf, C)
    io.check_range(m4, 4 * lo, 4 * hi, "column means", what)
    if pf.a_base.size and C:
        io.check_range(pf.a_base + b.min(), fit.K_MIN, fit.K_MAX, "sigma indices", what)
        io.check_range(pf.a_base + b.max(), fit.K_MIN, fit.K_MAX, "sigma indices", what)
    if pf.parent is not None:
        io.check_range(pf.a_ref, fit.K_MIN, fit.K_MAX, "ref sigma indices", what)
        io.check_range(pf.beta16, 0, 255, "ref betas", what)
    waves = _wave_rows(pf.parent, R)
    model = _param_model(pf.shape, lo, hi)
    out = np.empty((R, C), np.int8)
    base_rows = waves[0]
    for i0, i1 in _chunks(base_rows.size, C):
        k = pf.a_base[i0:i1, None] + b[None, :]
        mu = np.broadcast_to(m4[None, :] / 4.0, k.shape).reshape(-1)
        sym = io.guarded_decode(coder, what, model, mu, fit.sigma_for_index(k).reshape(-1))
        out[base_rows[i0:i1]] = sym.reshape(i1 - i0, C)
    for rows, idx in _ref_chunks(pf, waves, C):
        mu, sig = _ref_params(pf, rows, idx, out, lo, hi)
        out[rows] = io.guarded_decode(coder, what, model, mu, sig).reshape(rows.size, C)
    io.finish_decoder(coder, what)
    return out


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


def search(X: np.ndarray, lo: int, hi: int) -> list[ParamFit]:
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
