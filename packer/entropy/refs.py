"""The `grid-refs` ANS model (model 4): near-copies of an earlier row stored as residuals of a scaled copy,
in three parts (references, base rows, residual rows), decoded in waves. Layout: FORMAT.md "The `ans` blob".
Must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from common.errors import CodecError
from packer.entropy import blob as io
from packer.entropy import exact

MAX_BETA = 64
MAX_WAVES = 64                  # a referenced row is at most this many references away from a base row
Ans = constriction.stream.stack.AnsCoder


@dataclass(frozen=True)
class Refs:
    parent: np.ndarray          # [R]: -1 = base row, else an earlier row
    beta16: np.ndarray          # [number of referenced rows], in row order


def predict(parents: np.ndarray, beta16: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Integer predictions of rows from their parents' codes [n, C] and gains [n]."""
    p = (beta16.astype(np.int32)[:, None] * parents.astype(np.int32) + 8) >> 4
    return np.clip(p, lo, hi)


def waves(parent: np.ndarray) -> list[np.ndarray]:
    """Referenced rows by decode wave (wave 1: parent is a base row, ...), each ascending."""
    return exact.wave_rows(parent)[1:]


def _read_refs(data: bytes, R: int, what: str) -> Refs:
    r = io.BlobReader(data, what + " references")
    pf = io.read_side(r, "refs.flags", R)
    if pf.lo != 0 or pf.hi != 1 or pf.kind != io.SIDE_CAT:
        raise r._fail("refs.flags", "row flags are a categorical array of 0s and 1s")
    n_ref = pf.counts[1]
    if not 1 <= n_ref < R:
        raise r._fail("refs.flags", f"{n_ref} referenced rows of {R} (1..{R - 1})")
    pd = io.read_side(r, "refs.deltas", n_ref)
    pb = io.read_side(r, "refs.betas", n_ref)
    if pd.lo < 1 or pd.hi >= R:
        raise r._fail("refs.deltas", f"deltas span [{pd.lo}, {pd.hi}], outside [1, {R - 1}]")
    if pb.lo < 1 or pb.hi > MAX_BETA:
        raise r._fail("refs.betas", f"gains span [{pb.lo}, {pb.hi}], outside [1, {MAX_BETA}]")
    coder = io.new_decoder(r.words(), what + " references")
    flags = io.decode_side(coder, pf, R, what + " ref flags")
    deltas = io.decode_side(coder, pd, n_ref, what + " ref deltas")
    betas = io.decode_side(coder, pb, n_ref, what + " ref gains")
    io.check_sentinel(coder, what + " references")
    io.finish_decoder(coder, what + " references")
    rows = np.flatnonzero(flags)
    parent = np.full(R, -1, np.int64)
    parent[rows] = rows - deltas
    if np.any(parent[rows] < 0):
        raise CodecError(f"{what}: a referenced row points before row 0; corrupt section")
    depth = len(exact.wave_rows(parent)) - 1
    if depth > MAX_WAVES:
        raise CodecError(f"{what}: references chain {depth} rows deep (at most {MAX_WAVES}); corrupt section")
    return Refs(parent, betas)


def split(stored: bytes, R: int, what: str) -> tuple[Refs, bytes, bytes]:
    """(references, base rows' blob, residual rows' blob) of a grid-refs blob (after model, lo, hi)."""
    r = io.BlobReader(stored, what)
    r.pos = 3
    n = r.varint("refs.side_bytes", len(stored))
    if r.pos + n > len(stored):
        raise r._fail("refs.side_bytes", f"{n} bytes of references, only {len(stored) - r.pos} left")
    refs = _read_refs(bytes(stored[r.pos:r.pos + n]), R, what)
    r.pos += n
    m = r.varint("refs.base_bytes", len(stored))
    if r.pos + m > len(stored):
        raise r._fail("refs.base_bytes", f"{m} bytes of base rows, only {len(stored) - r.pos} left")
    base = bytes(stored[r.pos:r.pos + m])
    return refs, base, bytes(stored[r.pos + m:])


def assemble(refs: Refs, base: np.ndarray, resid: np.ndarray, lo: int, hi: int, what: str) -> np.ndarray:
    """The codes [R, C] from base rows, residual rows and references (exact inverse of `residuals`)."""
    R = refs.parent.size
    A = hi - lo + 1
    out = np.empty((R, base.shape[1]), np.int8)
    is_ref = refs.parent >= 0
    out[~is_ref] = base
    ref_rows = np.flatnonzero(is_ref)
    pos = np.full(R, -1, np.int64)
    pos[ref_rows] = np.arange(ref_rows.size)
    for rows in waves(refs.parent):
        k = pos[rows]
        pred = predict(out[refs.parent[rows]], refs.beta16[k], lo, hi)
        x = (pred - lo + resid[k].astype(np.int32)) % A + lo
        out[rows] = x.astype(np.int8)
    return out


def describe_name(refs: Refs) -> str:
    return f"refs{int((refs.parent >= 0).sum())}"
