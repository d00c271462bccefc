"""ANS entropy models for integer code matrices: the public decode / describe (and encode, imported lazily).

A blob is self-describing: byte 0 names the model, then its header, then one constriction ANS stream (u32
words). Models: 0 const, 1 tables (categorical per row group), 2 param (per-code quantized Gaussian /
Laplace, param.py), 3 grid (grid.py), 4 grid-refs (refs.py). Decoding allocates only what the caller's shape
allows, checks every header field, and raises CodecError on anything malformed. FORMAT.md "The `ans`
blob" is the layout. Must not import torch.
"""

from __future__ import annotations

import math

import constriction
import numpy as np

from common.errors import CodecError
from packer.entropy import blob as io
from packer.entropy import exact
from packer.entropy import grid as ans_grid
from packer.entropy import param as ans_param
from packer.entropy import refs as ans_refs

MAX_TABLES = 64
PREFER = ("size", "speed")
Ans = constriction.stream.stack.AnsCoder
MODEL_CONST, MODEL_TABLES, MODEL_PARAM, MODEL_GRID, MODEL_REFS = (io.MODEL_CONST, io.MODEL_TABLES, io.MODEL_PARAM,
                                                                  io.MODEL_GRID, io.MODEL_REFS)
SUB_MODELS = (MODEL_CONST, MODEL_GRID)     # what the parts of a grid-refs blob may be
MODEL_NAMES = io.MODEL_NAMES


def order0_entropy_bits(codes: np.ndarray) -> float:
    """Order-0 (empirical, per-array) entropy of `codes` in bits, summed over all elements."""
    c = np.asarray(codes).reshape(-1)
    if c.size == 0:
        return 0.0
    _, n = np.unique(c, return_counts=True)
    return float(-(n * np.log2(n / c.size)).sum())


# --- tables ----------------------------------------------------------------------------------------------


def _read_tables(r: io.BlobReader, lo: int, hi: int, R: int, C: int):
    K = r.u8("tables.count")
    if not 1 <= K <= MAX_TABLES:
        raise r._fail("tables.count", f"{K} tables (1..{MAX_TABLES} allowed)")
    fold = r.u8("tables.fold")
    width = r.u8("tables.width")
    prec = r.u8("tables.precision")
    if fold > 1 or width == 0 or prec > 40:
        raise r._fail("tables.layout", f"fold {fold}, bin width {width}, precision {prec}")
    bins, sizes = exact.bin_layout(lo, hi, bool(fold), width)
    tables = []
    for _ in range(K):
        q = np.array([r.varint("tables.count_value", io.MAX_COUNT) for _ in range(sizes.size)], np.int64)
        if q.sum() <= 0:
            raise r._fail("tables.counts", "a table with no mass")
        tables.append(exact.table_probabilities(q, bins, sizes))
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


# --- public ----------------------------------------------------------------------------------------------
def _read_start(stored: bytes, R: int, C: int, bounds: tuple[int, int], what: str, allowed=None):
    r = io.BlobReader(stored, what)
    model = r.u8("model")
    if model not in (MODEL_NAMES if allowed is None else allowed):
        raise r._fail("model", f"ANS model id {model} is unknown or not allowed here")
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


def _resid_bounds(lo: int, hi: int) -> tuple[int, int]:
    A = hi - lo + 1
    return -(A // 2), A - 1 - A // 2


def decode_codes(stored: bytes, R: int, C: int, bounds: tuple[int, int] = (-128, 127),
                 what: str = "ans section", allowed=None) -> np.ndarray:
    """int8 [R, C] codes from an ANS blob; CodecError on anything malformed."""
    r, model, lo, hi = _read_start(stored, R, C, bounds, what, allowed)
    if model == MODEL_CONST:
        if r.pos != len(stored):
            raise r._fail("end", "bytes after a constant blob")
        return np.full((R, C), lo, np.int8)
    if model == MODEL_TABLES:
        return _decode_tables(r, lo, hi, R, C, what)
    if model == MODEL_GRID:
        return ans_grid.decode(r, lo, hi, R, C, what)
    if model == MODEL_REFS:
        refs, base, resid = ans_refs.split(stored, R, what)
        n_ref = int((refs.parent >= 0).sum())
        xb = decode_codes(base, R - n_ref, C, (lo, hi), what + " base rows", SUB_MODELS)
        xr = decode_codes(resid, n_ref, C, _resid_bounds(lo, hi), what + " residual rows", SUB_MODELS)
        return ans_refs.assemble(refs, xb, xr, lo, hi, what)
    return ans_param.decode(r, lo, hi, R, C, what)


def describe_codes(stored: bytes, R: int, C: int, bounds: tuple[int, int] = (-128, 127),
                   what: str = "ans section") -> dict:
    """{'model', 'model_bytes', 'header_bytes', 'side_bits'}: bytes spent on the model, not on codes."""
    r, model, lo, hi = _read_start(stored, R, C, bounds, what)
    if model == MODEL_CONST:
        return {"model": "const", "model_bytes": len(stored), "header_bytes": len(stored), "side_bits": 0}
    if model == MODEL_REFS:
        refs, base, resid = ans_refs.split(stored, R, what)
        n_ref = int((refs.parent >= 0).sum())
        db = describe_codes(base, R - n_ref, C, (lo, hi), what)
        dr = describe_codes(resid, n_ref, C, _resid_bounds(lo, hi), what)
        own = len(stored) - len(base) - len(resid)
        return {"model": f"{ans_refs.describe_name(refs)}[{db['model']}|{dr['model']}]",
                "model_bytes": own + db["model_bytes"] + dr["model_bytes"],
                "header_bytes": own + db["header_bytes"] + dr["header_bytes"],
                "side_bits": db["side_bits"] + dr["side_bits"]}
    if model == MODEL_TABLES:
        tables, side = _read_tables(r, lo, hi, R, C)
        header = r.pos
        coder = io.new_decoder(r.words(), what)
        start = coder.num_valid_bits()
        io.decode_side(coder, side, R, what)
        side_bits = start - coder.num_valid_bits()
        name = "cat" if len(tables) == 1 else f"tables{len(tables)}"
    elif model == MODEL_GRID:
        gf, _, side_bits = ans_grid.read_fit(r, lo, hi, R, C, what)
        header = r.pos
        name = ans_grid.describe_name(gf)
    else:
        pf, _, side_bits = ans_param.read_sides(r, R, C, what)
        header = r.pos
        parts = [pf.shape, "row" if len(np.unique(pf.a_base)) > 1 else "tensor"]
        parts += ["colsigma"] * (pf.b is not None) + ["colmean"] * (pf.m4 is not None) + ["refs"] * (pf.parent is not None)
        name = "-".join(parts)
    return {"model": name, "model_bytes": header + math.ceil(side_bits / 8), "header_bytes": header,
            "side_bits": int(side_bits)}


def encode_codes(X: np.ndarray, prefer: str = "speed") -> bytes:
    """An ANS blob for int codes X [R, C] (deterministic): packer/entropy/encode.py, imported on first use
    because no encoder is needed to read an artifact."""
    if prefer not in PREFER:
        raise CodecError(f"ans option prefer={prefer!r}; use one of {PREFER}")
    from packer.entropy import encode

    return encode.encode_codes(X, prefer)


def encode_planes(X: np.ndarray) -> bytes:
    """An ANS blob for byte planes (categorical tables only): packer/entropy/encode.py."""
    from packer.entropy import encode

    return encode.encode_planes(X)
