"""Candidate encodings of one tensor: each (format, scale method) that applies, with its real stored bytes
and its reconstruction error.

Scale methods: absmax (round to nearest), clip_search (per row/group, weighted by diag H when a Hessian is
known), sdclip, absmean (ternary), gptq (needs the tensor's input Hessian; its scales come from the same
weighted clip search, ternary's from absmean). "best" keeps the method with the least error: the
Hessian-weighted output error tr(E H E^T) / rows when the tensor has a Hessian, else the plain sum of
squared errors. Bytes are what quant.pack will store for the tensor's sections (codec or raw, whichever is
smaller), measured by encoding them. Must not: choose formats across tensors (quant/planner.py) or write files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from packer.errors import QuantError
from quant import formats
from quant import primitives as P
from quant.calibrate import Hessian
from quant.gptq import GPTQConfig, gptq_codes, prepare
from quant.pack import PackOptions, sized_tensor_sections


@dataclass(frozen=True)
class Candidate:
    name: str
    format: str
    method: str | None          # None for float formats
    enc: formats.Encoded
    bytes: int                  # stored payload bytes of the tensor's sections
    error: float                # Hessian-weighted error per calibration row, or sum of squared errors
    weighted: bool              # error is Hessian-weighted

    @property
    def family(self) -> str:
        """Errors are comparable within a family: 'hessian' (weighted) or 'plain'."""
        return "hessian" if self.weighted else "plain"


def gptq_config(opts: PackOptions) -> GPTQConfig:
    return GPTQConfig(damp_frac=opts.gptq_damp, block_size=opts.gptq_block, act_order=opts.gptq_act_order)


def usable_hessian(w: np.ndarray, hessian: Hessian | None) -> Hessian | None:
    """The Hessian if it matches the tensor's row length (weights used as x @ W^T) and saw inputs."""
    if hessian is None or w.ndim != 2 or hessian.rows == 0:
        return None
    return hessian if hessian.matrix.shape == (w.shape[1], w.shape[1]) else None


def methods(fmt: str, hessian: Hessian | None, opts: PackOptions, allow_gptq: bool = True) -> tuple:
    """Scale methods to try for fmt: all that apply for 'best', else the one requested."""
    base = formats.methods_for(fmt)
    if not base:
        return (None,)
    gptq_ok = hessian is not None and allow_gptq and formats.spec(fmt).kind == "int"
    can = list(base) + (["gptq"] if gptq_ok else [])
    if opts.scale_method == "best":
        return tuple(can)
    if opts.scale_method in can:
        return (opts.scale_method,)
    raise QuantError(f"scale method {opts.scale_method!r} does not apply to format {fmt!r}"
                     f"{' without calibration data (no Hessian)' if opts.scale_method == 'gptq' else ''}; "
                     f"it supports {can}; use --scale-method best")


def encode_with(w: np.ndarray, fmt: str, method: str | None, hessian: Hessian | None,
                opts: PackOptions, memo: dict | None = None) -> formats.Encoded:
    """Encode w in fmt with one scale method (`memo` shares the weighted clip search between clip_search
    and GPTQ's scales)."""
    memo = {} if memo is None else memo
    diag = np.diag(hessian.matrix) if hessian is not None else None
    s = formats.spec(fmt)
    rows = formats.as_rows(w)

    def searched():
        if "clip" not in memo:
            memo["clip"] = P.clip_search(P.check_rows(rows), s.bits, s.group, weights=diag)
        return memo["clip"]

    if method == "clip_search" and s.kind == "int" and not s.ternary:
        return formats.encode(w, fmt, searched(), method="clip_search")
    if method != "gptq":
        return formats.encode(w, fmt, method=method, sdclip_k=opts.sdclip_k)
    if s.kind != "int" or hessian is None:
        raise QuantError(f"GPTQ applies to integer formats with a Hessian; not to {fmt!r} here")
    rows = P.check_rows(rows)
    clip = P.absmean_clip(rows, s.group) if s.ternary else searched()
    scales = P.scales_for_clip(clip, s.bits)
    cfg = gptq_config(opts)
    if cfg not in hessian.cache:
        hessian.cache[cfg] = prepare(hessian.matrix, cfg)
    codes = gptq_codes(rows, hessian.matrix, scales, s.bits, s.group, cfg, hessian.cache[cfg])
    return formats.from_codes(fmt, codes, scales, "gptq")


def error_of(w: np.ndarray, enc: formats.Encoded, hessian: Hessian | None) -> float:
    w_hat = formats.decode(enc.format, enc.arrays, w.shape)
    if hessian is not None:
        return P.hessian_error(w, w_hat, hessian.matrix) / hessian.rows
    d = w.astype(np.float64) - w_hat.astype(np.float64)
    return float(np.sum(d * d))


def best_candidate(name: str, w: np.ndarray, fmt: str, hessian: Hessian | None, opts: PackOptions,
                   allow_gptq: bool = True) -> Candidate:
    """The least-error encoding of w in fmt among the methods that apply (ties: the earlier method)."""
    w = np.asarray(w, dtype=np.float32)
    h = usable_hessian(w, hessian)
    best, memo = None, {}
    for m in methods(fmt, h, opts, allow_gptq):
        enc = encode_with(w, fmt, m, h, opts, memo)
        err = error_of(w, enc, h)
        if best is None or err < best[1]:
            best = (enc, err)
    enc, err = best
    _, _, nbytes = sized_tensor_sections(name, enc, opts)
    return Candidate(name, fmt, enc.scale, enc, nbytes, err, h is not None)


def applies(fmt: str, w: np.ndarray) -> bool:
    """Whether fmt is a distinct, valid choice for w (a group as long as the row repeats the row format)."""
    s = formats.spec(fmt)
    rows = formats.as_rows(np.asarray(w))
    if s.kind == "int" and s.group is not None and s.group >= rows.shape[1]:
        return False
    if fmt == "fp16" or s.kind == "nf4":
        return bool(np.all(np.abs(w) <= P.FP16_MAX))
    return rows.size > 0


def candidate_set(name: str, w: np.ndarray, hessian: Hessian | None, menu: tuple[str, ...], opts: PackOptions,
                  also_data_free: bool = False) -> list[Candidate]:
    """One best candidate per applicable menu format; with also_data_free, also the best non-GPTQ one
    wherever GPTQ won (for tensors, like a tied embedding, whose Hessian sees only one of their uses)."""
    out = []
    for fmt in menu:
        if not applies(fmt, w):
            continue
        c = best_candidate(name, w, fmt, hessian, opts)
        out.append(c)
        if also_data_free and c.method == "gptq" and opts.scale_method == "best":
            alt = best_candidate(name, w, fmt, None, opts)
            out.append(alt)
    return out
