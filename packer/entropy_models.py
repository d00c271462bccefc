"""ANS entropy models for integer code matrices: blob layout, encode, exact bounded decode, describe.

A blob is self-describing: byte 0 names the model, then the model's header (ranges, histograms, side-array
models), then one constriction ANS stream (little-endian u32 words) holding side arrays and codes. Models:
  const  - every code equal (or no codes): no stream at all.
  tables - K categorical tables with stored counts, one chosen per row (K = 1 is the per-tensor histogram).
  param  - constriction's QuantizedGaussian / QuantizedLaplace per code, sigma = 2^((a_i + b_j)/8) from
           per-row and per-column grid indices, mean = m_j/4 per column, and rows that are near-copies of a
           base row predicted from it (mean = round(beta_i * x_base)), each side array coded in the stream.
`encode_codes` tries the candidates and keeps the smallest blob (first wins ties), so equal input gives
equal bytes. Decoding allocates only what the caller's shape allows, checks every header field, and
raises CodecError when the stream is not used up exactly. Fitting lives in packer.entropy_fit.
Must not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np

from packer import ans_io as io
from packer import entropy_fit as fit
from packer.errors import CodecError

MODEL_CONST, MODEL_TABLES, MODEL_PARAM = 0, 1, 2
MODEL_NAMES = {MODEL_CONST: "const", MODEL_TABLES: "tables", MODEL_PARAM: "param"}
MAX_TABLES = 64
GROUP_CHOICES = (2, 4, 8, 16)
MAX_ROW_TABLES = 8               # at most this many rows may each get their own table
FLAG_COL_SIGMA, FLAG_COL_MEAN, FLAG_REFS = 1, 2, 4
DECODE_CHUNK = 1 << 21          # symbols per constriction call when decoding per-symbol parameters
PREFER = ("size", "speed")
PARAM_TRIALS = 2               # param candidates encoded for real (best estimates first)
Ans = constriction.stream.stack.AnsCoder


def order0_entropy_bits(codes: np.ndarray) -> float:
    """Order-0 (empirical, per-array) entropy of `codes` in bits, summed over all elements."""
    c = np.asarray(codes).reshape(-1)
    if c.size == 0:
        return 0.0
    _, n = np.unique(c, return_counts=True)
    return float(-(n * np.log2(n / c.size)).sum())


def _header(model: int, lo: int, hi: int) -> io.BlobWriter:
    w = io.BlobWriter()
    w.u8(model)
    w.u8(lo + 128)
    w.u8(hi + 128)
    return w


def _finish(w: io.BlobWriter, coder: Ans) -> bytes:
    words = coder.get_compressed()
    return bytes(w.buf) + np.asarray(words, dtype="<u4").tobytes()


def _encode_const(X: np.ndarray) -> bytes:
    v = int(X.flat[0]) if X.size else 0
    return bytes([MODEL_CONST, v + 128, (v + 128) ^ 0xFF])      # the complement guards the value byte


# --- tables ----------------------------------------------------------------------------------------------
def _encode_tables(X: np.ndarray, lo: int, hi: int, labels: np.ndarray) -> bytes:
    K = int(labels.max()) + 1
    H = fit.row_histograms(X, lo, hi)
    tables = np.stack([H[labels == g].sum(0) for g in range(K)])
    fold, width, prec = fit.choose_table_layout(tables, lo, hi)
    bins, sizes = fit.bin_layout(lo, hi, bool(fold), width)
    w = _header(MODEL_TABLES, lo, hi)
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
    return _finish(w, coder)


def _read_tables(r: io.BlobReader, lo: int, hi: int, R: int, C: int):
    K = r.u8("tables.count")
    if not 1 <= K <= MAX_TABLES:
        raise r._fail("tables.count", f"{K} tables (1..{MAX_TABLES} allowed)")
    fold = r.u8("tables.fold")
    width = r.u8("tables.width")
    prec = r.u8("tables.precision")
    if fold > 1 or width == 0 or prec > 40:
        raise r._fail("tables.layout", f"fold {fold}, bin width {width}, precision {prec}")
    bins, sizes = fit.bin_layout(lo, hi, bool(fold), width)
    tables = []
    for _ in range(K):
        q = np.array([r.varint("tables.count_value", io.MAX_COUNT) for _ in range(sizes.size)], np.int64)
        if q.sum() <= 0:
            raise r._fail("tables.counts", "a table with no mass")
        tables.append(fit.table_probabilities(q, bins, sizes))
    side = io.read_side(r, "tables.labels", R)
    if side.lo < 0 or side.hi >= K:
        raise r._fail("tables.labels", f"row labels span [{side.lo}, {side.hi}] with {K} tables")
    return tables, side


def _decode_tables(r: io.BlobReader, lo: int, hi: int, R: int, C: int, what: str) -> np.ndarray:
    tables, side = _read_tables(r, lo, hi, R, C)
    coder = io.new_decoder(r.words(), what)
    labels = io.decode_side(coder, side, R, what + " row labels")
    out = np.empty((R, C), np.int8)
    for g, t in enumerate(tables):
        rows = np.flatnonzero(labels == g)
        if rows.size and C:
            model = constriction.stream.model.Categorical(t, perfect=False)
            sym = io.guarded_decode(coder, what, model, rows.size * C)
            out[rows] = (sym.astype(np.int64) + lo).reshape(rows.size, C)
    io.finish_decoder(coder, what)
    return out


# --- param -----------------------------------------------------------------------------------------------
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
    w = _header(MODEL_PARAM, lo, hi)
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


def _encode_param(X: np.ndarray, lo: int, hi: int, pf: ParamFit) -> bytes:
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
    return _finish(w, coder)


def _estimate_param_bytes(cm: fit.CostModel, pf: ParamFit, data_bits: float) -> float:
    w, sides = _param_head(pf, cm.lo, cm.hi)
    coder = Ans()
    _encode_sides(coder, sides)
    return len(w.buf) + (coder.num_bits() + data_bits) / 8 + 4


def _check_range(arr: np.ndarray, lo: int, hi: int, field: str, what: str) -> None:
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        raise CodecError(f"{what}: decoded {field} spans [{arr.min()}, {arr.max()}], outside [{lo}, {hi}]; "
                         f"the section is corrupt")


def _read_param_sides(r: io.BlobReader, R: int, C: int, what: str):
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
            _check_range(flag, 0, 1, name, what)
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


def _decode_param(r: io.BlobReader, lo: int, hi: int, R: int, C: int, what: str) -> np.ndarray:
    pf, coder, _ = _read_param_sides(r, R, C, what)
    b, m4 = _base_params(pf, C)
    _check_range(m4, 4 * lo, 4 * hi, "column means", what)
    if pf.a_base.size and C:
        _check_range(pf.a_base + b.min(), fit.K_MIN, fit.K_MAX, "sigma indices", what)
        _check_range(pf.a_base + b.max(), fit.K_MIN, fit.K_MAX, "sigma indices", what)
    if pf.parent is not None:
        _check_range(pf.a_ref, fit.K_MIN, fit.K_MAX, "ref sigma indices", what)
        _check_range(pf.beta16, 0, 255, "ref betas", what)
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


# --- public ----------------------------------------------------------------------------------------------
def _read_start(stored: bytes, R: int, C: int, bounds: tuple[int, int], what: str):
    r = io.BlobReader(stored, what)
    model = r.u8("model")
    if model not in MODEL_NAMES:
        raise r._fail("model", f"unknown ANS model id {model}")
    lo = r.u8("lo") - 128
    if model == MODEL_CONST:
        if r.u8("check") != (lo + 128) ^ 0xFF:
            raise r._fail("check", "the constant's check byte does not match")
        if not bounds[0] <= lo <= bounds[1] and R * C:
            raise r._fail("value", f"constant {lo} outside {list(bounds)}")
        return r, model, lo, lo
    hi = r.u8("hi") - 128
    if not bounds[0] <= lo <= hi <= bounds[1]:
        raise r._fail("range", f"code range [{lo}, {hi}] is not within {list(bounds)}")
    if R * C == 0 or lo == hi:
        raise r._fail("model", f"model {MODEL_NAMES[model]} for a tensor that needs none")
    return r, model, lo, hi


def decode_codes(stored: bytes, R: int, C: int, bounds: tuple[int, int] = (-128, 127),
                 what: str = "ans section") -> np.ndarray:
    """int8 [R, C] codes from an ANS blob; CodecError on anything malformed."""
    r, model, lo, hi = _read_start(stored, R, C, bounds, what)
    if model == MODEL_CONST:
        if r.pos != len(stored):
            raise r._fail("end", "bytes after a constant blob")
        return np.full((R, C), lo, np.int8)
    if model == MODEL_TABLES:
        return _decode_tables(r, lo, hi, R, C, what)
    return _decode_param(r, lo, hi, R, C, what)


def describe_codes(stored: bytes, R: int, C: int, bounds: tuple[int, int] = (-128, 127),
                   what: str = "ans section") -> dict:
    """{'model', 'model_bytes', 'header_bytes', 'side_bits'}: bytes spent on the model, not on codes."""
    r, model, lo, hi = _read_start(stored, R, C, bounds, what)
    if model == MODEL_CONST:
        return {"model": "const", "model_bytes": len(stored), "header_bytes": len(stored), "side_bits": 0}
    if model == MODEL_TABLES:
        tables, side = _read_tables(r, lo, hi, R, C)
        header = r.pos
        coder = io.new_decoder(r.words(), what)
        start = coder.num_valid_bits()
        io.decode_side(coder, side, R, what)
        side_bits = start - coder.num_valid_bits()
        name = "cat" if len(tables) == 1 else f"tables{len(tables)}"
    else:
        pf, _, side_bits = _read_param_sides(r, R, C, what)
        header = r.pos
        parts = [pf.shape, "row" if len(np.unique(pf.a_base)) > 1 else "tensor"]
        parts += ["colsigma"] * (pf.b is not None) + ["colmean"] * (pf.m4 is not None) + ["refs"] * (pf.parent is not None)
        name = "-".join(parts)
    return {"model": name, "model_bytes": header + math.ceil(side_bits / 8), "header_bytes": header,
            "side_bits": int(side_bits)}


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


def encode_codes(X: np.ndarray, prefer: str = "size") -> bytes:
    """The smallest ANS blob for int codes X [R, C] among the candidate models (deterministic)."""
    if prefer not in PREFER:
        raise CodecError(f"ans option prefer={prefer!r}; use one of {PREFER}")
    X = np.ascontiguousarray(X, np.int8)
    R = X.shape[0]
    if X.size == 0 or int(X.min()) == int(X.max()):
        return _encode_const(X)
    lo, hi = int(X.min()), int(X.max())
    blobs = [_encode_tables(X, lo, hi, np.zeros(R, np.int64))]
    if 2 <= R <= MAX_ROW_TABLES:              # a few long rows (byte planes): one table each
        blobs.append(_encode_tables(X, lo, hi, np.arange(R)))
    if R >= 4:
        H = fit.row_histograms(X, lo, hi)
        for k in GROUP_CHOICES:
            if R >= 2 * k:
                labels = fit.fit_groups(H, k)
                if labels.max() > 0:
                    blobs.append(_encode_tables(X, lo, hi, labels))
    if prefer == "size":
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
        blobs += [_encode_param(X, lo, hi, pf) for _, pf in lifted]
    return min(blobs, key=len)


def describe(stored: bytes, params: dict, raw_len: int | None = None) -> dict:
    """{'model', 'model_bytes', ...} of an "ans" section from its stored bytes and section params."""
    from packer import ans_codec  # the params-to-matrix layout lives with the codec

    return ans_codec.describe(stored, params, raw_len)
