"""The `param` ANS model: constriction's QuantizedGaussian / QuantizedLaplace with per-code parameters.

sigma = 2^((a_i + b_j)/8) from per-row and per-column grid indices, mean = m_j/4 per column, and rows that
are near-copies of an earlier row predicted from it (mean = round(beta_i/16 * x_parent), own sigma), every
side array coded in the same ANS stream ahead of the codes. Owns this model's blob layout (FORMAT.md "The
`ans` blob", model 2) and its exact bounded decoder; the encoder (search over variants, fitted with
packer.entropy.fit and ranked by estimated bytes) is packer/entropy/encode.py. Must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from common.errors import CodecError
from packer.entropy import blob as io
from packer.entropy import exact

FLAG_COL_SIGMA, FLAG_COL_MEAN, FLAG_REFS = 1, 2, 4
DECODE_CHUNK = 1 << 21          # symbols per constriction call (bounds the per-symbol parameter arrays)
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
    return exact.wave_rows(parent)


def _ref_chunks(pf: ParamFit, waves: list[np.ndarray], C: int):
    """(rows, ref index range) per constriction call for the predicted rows, in decode order."""
    ref_pos = np.cumsum(pf.parent >= 0) - 1 if pf.parent is not None else None
    for rows in waves[1:]:
        for i0, i1 in _chunks(rows.size, C):
            yield rows[i0:i1], ref_pos[rows[i0:i1]]


def _ref_params(pf: ParamFit, rows, idx, decoded: np.ndarray, lo: int, hi: int):
    mu = exact.ref_means4(pf.beta16[idx], decoded[pf.parent[rows]], lo, hi) / 4.0
    sig = np.broadcast_to(exact.sigma_for_index(pf.a_ref[idx])[:, None], mu.shape)
    return mu.reshape(-1), np.ascontiguousarray(sig).reshape(-1)


def read_sides(r: io.BlobReader, R: int, C: int, what: str):
    """Header + side arrays of a param blob: (ParamFit, coder positioned at the codes, side bits)."""
    shape_id = r.u8("param.shape")
    if shape_id >= len(exact.SHAPES):
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
    pf = ParamFit(exact.SHAPES[shape_id], vals["row sigmas"], vals.get("column sigmas"), vals.get("column means"),
                  parent, vals.get("ref sigmas"), vals.get("ref betas"))
    return pf, coder, start_bits - coder.num_valid_bits()


def decode(r: io.BlobReader, lo: int, hi: int, R: int, C: int, what: str) -> np.ndarray:
    pf, coder, _ = read_sides(r, R, C, what)
    b, m4 = _base_params(pf, C)
    io.check_range(m4, 4 * lo, 4 * hi, "column means", what)
    if pf.a_base.size and C:
        io.check_range(pf.a_base + b.min(), exact.K_MIN, exact.K_MAX, "sigma indices", what)
        io.check_range(pf.a_base + b.max(), exact.K_MIN, exact.K_MAX, "sigma indices", what)
    if pf.parent is not None:
        io.check_range(pf.a_ref, exact.K_MIN, exact.K_MAX, "ref sigma indices", what)
        io.check_range(pf.beta16, 0, 255, "ref betas", what)
    waves = _wave_rows(pf.parent, R)
    model = _param_model(pf.shape, lo, hi)
    out = np.empty((R, C), np.int8)
    base_rows = waves[0]
    for i0, i1 in _chunks(base_rows.size, C):
        k = pf.a_base[i0:i1, None] + b[None, :]
        mu = np.broadcast_to(m4[None, :] / 4.0, k.shape).reshape(-1)
        sym = io.guarded_decode(coder, what, model, mu, exact.sigma_for_index(k).reshape(-1))
        out[base_rows[i0:i1]] = sym.reshape(i1 - i0, C)
    for rows, idx in _ref_chunks(pf, waves, C):
        mu, sig = _ref_params(pf, rows, idx, out, lo, hi)
        out[rows] = io.guarded_decode(coder, what, model, mu, sig).reshape(rows.size, C)
    io.finish_decoder(coder, what)
    return out


