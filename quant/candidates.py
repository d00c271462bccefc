"""Candidate encodings of one tensor: each (format, scale method) that applies, with its real stored bytes
and its reconstruction error.

Scale methods: absmax (round to nearest), clip_search (per row/group, weighted by diag H when a Hessian is
known), sdclip, absmean (ternary), gptq (needs the tensor's input Hessian; see encode_with for its scales).
The error is the Hessian-weighted output error tr(E H E^T) / rows when the tensor has a Hessian, else the
plain sum of squared errors. `best_candidate` keeps, for one format, the method with the least error (the
default plan); `candidate_set` keeps every (format, method) on the bytes/error frontier (the planner): the
scale method changes the bytes too, since clipping spreads the codes and raises their entropy. Bytes are what
quant.pack stores for the tensor's sections (the smallest codec, or raw), measured by encoding them.
Must not: choose formats across tensors (quant/planner.py) or write files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from common.errors import QuantError
from quant import formats
from quant import primitives as P
from quant.gptq import GPTQConfig, gptq_codes_batch, prepare
from quant.hessian import Hessian
from quant.options import PackOptions
from quant.sections import tensor_sections


@dataclass(frozen=True)
class Candidate:
    name: str
    format: str
    method: str | None          # None for float formats
    enc: formats.Encoded
    bytes: int                  # stored payload bytes of the tensor's sections
    error: float                # Hessian-weighted error per calibration row, or sum of squared errors
    weighted: bool              # error is Hessian-weighted
    variant: str | None = None  # which scale source within the method (see encodings)

    @property
    def label(self) -> str | None:
        """method[:variant], as plan files name it (None for float formats)."""
        return self.method if self.variant is None else f"{self.method}:{self.variant}"

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


LARGE_TENSOR = 1 << 17      # elements: above, the cheaper search below (the users' 0.13M-4M-element matrices)


def methods(fmt: str, hessian: Hessian | None, opts: PackOptions, allow_gptq: bool = True, large: bool = False
            ) -> tuple:
    """Scale methods to try for fmt: all that apply for 'best', else the one requested. For a large tensor that
    GPTQ applies to, 'best' tries the format's first data-free method and GPTQ only: GPTQ from clip-searched
    scales has less error than the data-free clip search and SDClip (it includes their scales), and on the
    users' matrices their full-size searches and errors cost more than GPTQ itself."""
    can = list(formats.get(fmt).methods(hessian is not None and allow_gptq))
    if not can:
        return (None,)
    if opts.scale_method == "best":
        if large and "gptq" in can:
            return tuple(dict.fromkeys((can[0], "gptq")))
        return tuple(can)
    if opts.scale_method in can:
        return (opts.scale_method,)
    raise QuantError(f"scale method {opts.scale_method!r} does not apply to format {fmt!r}"
                     f"{' without calibration data (no Hessian)' if opts.scale_method == 'gptq' else ''}; "
                     f"it supports {can}; use --scale-method best")


GPTQ_CLIP_GRIDS = {"clip0.9": P.CLIP_FRACTIONS[40:], "clip0.8": P.CLIP_FRACTIONS[30:],
                   "clip0.5": P.CLIP_FRACTIONS}                      # fractions of the row maximum searched
# large tensors search every fifth fraction (0.50, 0.55, ..., 1.00: 11 instead of 51 quantize-and-measure passes
# over millions of values); GPTQ then compensates within the chosen grid
GPTQ_CLIP_GRIDS_COARSE = {k: tuple(f for f in g if round(f * 100) % 5 == 0) for k, g in GPTQ_CLIP_GRIDS.items()}


def clip_grids(rows: np.ndarray) -> dict[str, tuple]:
    """The clip-fraction grids GPTQ's scale sources (and the data-free clip search) use for these rows."""
    return GPTQ_CLIP_GRIDS_COARSE if rows.size > LARGE_TENSOR else GPTQ_CLIP_GRIDS
VARIANTS = {"gptq": ("absmax", "absmean", *GPTQ_CLIP_GRIDS), "clip_search": ("weighted", "plain")}


def encodings(w: np.ndarray, fmt: str, method: str | None, hessian: Hessian | None, opts: PackOptions,
              memo: dict | None = None) -> list[tuple[str | None, formats.Encoded]]:
    """(variant, encoding) of w in fmt by one scale method (`memo` shares clip searches between methods).

    clip_search: "weighted" by diag H when a Hessian is given, else "plain". gptq: one per scale source,
    "absmean" for ternary, else "absmax" and the diag-H-weighted clip searches of GPTQ_CLIP_GRIDS (clipping
    that suits round-to-nearest can hurt once GPTQ feeds the errors forward, and less clipping keeps the
    codes' entropy lower). Other methods have one encoding and no variant."""
    memo = {} if memo is None else memo
    f = formats.get(fmt)
    diag = np.diag(hessian.matrix) if hessian is not None else None

    def searched(grid):
        key = ("clip", grid, hessian is not None)
        if key not in memo:
            memo[key] = f.clip(P.check_rows(formats.as_rows(w)), "clip_search", diag, fractions=grid)
        return memo[key]

    if method == "clip_search" and "clip_search" in f.scale_methods:
        rows = P.check_rows(formats.as_rows(w))
        if hessian is not None:           # one pass for this search and GPTQ's, whose widest grid it is
            gptq_jobs(rows, f, diag, memo)
        return [("weighted" if hessian is not None else "plain",
                 f.encode(w, "clip_search", clip=searched(clip_grids(rows)["clip0.5"])))]
    if method != "gptq":
        return [(None, f.encode(w, method, sdclip_k=opts.sdclip_k))]
    if not f.uses_gptq or hessian is None:
        raise QuantError(f"GPTQ applies to integer formats with a Hessian; not to {fmt!r} here")
    rows = P.check_rows(formats.as_rows(w))
    return gptq_encodings(rows, hessian, scout_variants(rows, hessian, gptq_jobs(rows, f, diag, memo), opts), opts)


def gptq_jobs(rows: np.ndarray, f: formats.TensorFormat, diag: np.ndarray, memo: dict) -> list:
    """(format, variant, clip) of every GPTQ scale source of f: the format's start clips, with the diag-H-
    weighted clip searches of GPTQ_CLIP_GRIDS (one pass for all of them, memoised in `memo`, which the data-free
    clip search shares: its grid is the widest)."""
    grids = clip_grids(rows)

    def searched():
        missing = {k: g for k, g in grids.items() if ("clip", g, True) not in memo}
        if missing:
            found = P.clip_search_grids(rows, f.bits, f.group, missing, diag)
            memo.update({("clip", g, True): found[k] for k, g in missing.items()})
        return {k: memo[("clip", g, True)] for k, g in grids.items()}
    return [(f, v, clip) for v, clip in f.gptq_start_clips(rows, searched).items()]


GPTQ_BATCH_BYTES = 64 << 20        # float64 rows one batched GPTQ sweep may hold (jobs x rows x cols x 8)


def gptq_encodings(rows: np.ndarray, hessian: Hessian, jobs: list, opts: PackOptions
                   ) -> list[tuple[str, formats.Encoded]]:
    """(variant, GPTQ encoding) for each (format, variant, clip) job on the same rows and Hessian: batched
    column sweeps (quant.gptq.gptq_codes_batch) of at most GPTQ_BATCH_BYTES each."""
    cfg = gptq_config(opts)
    if cfg not in hessian.cache:
        hessian.cache[cfg] = prepare(hessian.matrix, cfg)
    per_batch = max(1, GPTQ_BATCH_BYTES // max(1, rows.size * 8))
    out = []
    for i in range(0, len(jobs), per_batch):
        chunk = [(f, v, P.scales_for_clip(clip, f.bits)) for f, v, clip in jobs[i:i + per_batch]]
        codes = gptq_codes_batch(rows, hessian.matrix, [(s, f.bits, f.group) for f, _, s in chunk], cfg,
                                 hessian.cache[cfg])
        out.extend((v, f.from_codes(c, s, "gptq")) for (f, v, s), c in zip(chunk, codes))
    return out


SCOUT_ROWS = 256     # GPTQ variants are compared on this many rows of a tensor with more than twice as many


def scout_variants(rows: np.ndarray, hessian: Hessian, jobs: list, opts: PackOptions) -> list:
    """Per format, the GPTQ job (scale source) with the least Hessian-weighted error on SCOUT_ROWS rows spread
    over the tensor. GPTQ treats rows independently, so those rows' codes are exactly what the full sweep gives
    them: the choice costs a fraction of a sweep, and only the chosen variant then runs on every row."""
    R = rows.shape[0]
    per_format: dict[str, list] = {}
    for job in jobs:
        per_format.setdefault(job[0].name, []).append(job)
    if R <= 2 * SCOUT_ROWS or all(len(js) == 1 for js in per_format.values()):
        return jobs
    pick = np.linspace(0, R - 1, SCOUT_ROWS).round().astype(np.int64)
    sub = rows[pick]
    sub_jobs = [(f, v, np.asarray(clip)[pick]) for f, v, clip in jobs]
    errors = [P.hessian_error(sub, formats.decode(enc.format, enc.arrays, sub.shape), hessian.matrix)
              for _, enc in gptq_encodings(sub, hessian, sub_jobs, opts)]
    best = {}
    for job, err in zip(jobs, errors):
        if job[0].name not in best or err < best[job[0].name][1]:
            best[job[0].name] = (job, err)
    return [job for job, _ in best.values()]


def encode_with(w: np.ndarray, fmt: str, method: str | None, hessian: Hessian | None,
                opts: PackOptions, memo: dict | None = None) -> formats.Encoded:
    """The least-error encoding of w in fmt by one scale method (over its variants)."""
    return min(encodings(w, fmt, method, hessian, opts, memo), key=lambda ve: error_of(w, ve[1], hessian))[1]


def error_of(w: np.ndarray, enc: formats.Encoded, hessian: Hessian | None) -> float:
    w_hat = formats.decode(enc.format, enc.arrays, w.shape)
    if hessian is not None:
        return P.hessian_error(w, w_hat, hessian.matrix) / hessian.rows
    d = w.astype(np.float64) - w_hat.astype(np.float64)
    return float(np.sum(d * d))


def best_candidate(name: str, w: np.ndarray, fmt: str, hessian: Hessian | None, opts: PackOptions,
                   allow_gptq: bool = True, scale: str | None = None) -> Candidate:
    """The least-error encoding of w in fmt among the methods (and variants) that apply, or exactly the
    `scale` label given ("gptq", "gptq:absmax", "clip_search:plain", ...). Ties go to the earlier one."""
    w = np.asarray(w, dtype=np.float32)
    h = usable_hessian(w, hessian)
    method, _, variant = (scale or "").partition(":")
    if scale is not None:
        opts = replace(opts, scale_method=method)
        if variant and variant not in VARIANTS.get(method, ()):
            raise QuantError(f"tensor {name!r}: unknown variant {variant!r} of scale method {method!r}; known: "
                             f"{list(VARIANTS.get(method, ()))}")
        if variant == "plain":
            h = None
    best, memo = None, {}
    for m in methods(fmt, h, opts, allow_gptq, large=w.size > LARGE_TENSOR and scale is None):
        for v, enc in encodings(w, fmt, m, h, opts, memo):
            if variant and v != variant:
                continue
            err = error_of(w, enc, h)
            if best is None or err < best[1]:
                best = (enc, err, v)
    if best is None:
        raise QuantError(f"tensor {name!r}: scale {scale!r} does not apply to format {fmt!r}")
    enc, err, v = best
    _, _, nbytes = tensor_sections(name, enc, opts)
    return Candidate(name, fmt, enc.scale, enc, nbytes, err, h is not None, v)


def estimated_bytes(enc: formats.Encoded) -> float:
    """A cheap stand-in for stored bytes, for pruning only: order-0 entropy of the codes (whole tensor) plus
    the other arrays at 3/4 of their raw size."""
    total = 0.0
    for role, arr in enc.arrays.items():
        if role == "codes":
            counts = np.bincount(arr.reshape(-1).view(np.uint8), minlength=256)
            counts = counts[counts > 0]
            p = counts / counts.sum()
            total += float(-(p * np.log2(p)).sum()) * arr.size / 8
        else:
            total += 0.75 * arr.nbytes
    return total


def smallest_bytes_estimate(w: np.ndarray, menu: tuple[str, ...]) -> float:
    """About the fewest bytes any menu format stores w in: the format with the fewest nominal bits, rounded to
    nearest (data-free, vectorised), sized by estimated_bytes. For failing an impossible budget in seconds,
    before any calibration; the planner's real bytes decide everything else."""
    usable = [formats.get(f) for f in menu if formats.get(f).applies(w)]
    if not usable:
        return float(np.asarray(w).size * 2)
    fmt = min(usable, key=lambda f: (f.nominal_bits, f.group or 0))
    return estimated_bytes(fmt.encode(w))


def _pareto(items: list, key_bytes, key_err, slack: float = 1.0) -> list:
    """Items no other beats on both bytes (times slack) and error."""
    out, best_err = [], np.inf
    for it in sorted(items, key=lambda it: (key_bytes(it), key_err(it))):
        if key_err(it) < best_err:
            out.append(it)
            best_err = key_err(it)
    if slack == 1.0:
        return out
    keep = []
    for it in items:                     # also keep those within `slack` of the frontier's bytes
        if not any(key_bytes(o) * slack < key_bytes(it) and key_err(o) <= key_err(it) for o in out if o is not it):
            keep.append(it)
    return keep


NEAR_FORMAT_SLACK = 1.10     # full scale searches and GPTQ for formats within 10% (bytes) of the scouts' frontier


def candidate_set(name: str, w: np.ndarray, hessian: Hessian | None, menu: tuple[str, ...], opts: PackOptions,
                  also_data_free: bool = False) -> list[Candidate]:
    """Every applicable (menu format, scale method) of w worth sizing, pruned to those no other beats on both
    bytes and error (first on estimated bytes with 3% slack, then on the real stored bytes).

    Two stages, so that the cost does not grow as formats x methods at the users' scale: each menu format is
    first scouted with its cheapest encoding (round to nearest at the row or group maximum: one pass); the
    clip searches and GPTQ (batched: one column sweep for several formats and variants) then run only for
    the formats whose scout lies within NEAR_FORMAT_SLACK of the scouts' frontier — a better scale method
    lowers every format's error by a similar factor, so a format far behind the frontier stays behind it.
    With also_data_free (a tied embedding, whose Hessian sees only its head use) the data-free methods are kept
    a second time, scored by plain squared error, as a separate family."""
    w = np.asarray(w, dtype=np.float32)
    h = usable_hessian(w, hessian)
    families = [h] + ([None] if also_data_free and h is not None and opts.scale_method == "best" else [])
    out = []
    for fam_h in families:
        scouts, memos = {}, {}
        for fmt in menu:
            if formats.get(fmt).applies(w):
                enc = formats.get(fmt).encode(w)                     # the format's first data-free method
                scouts[fmt] = (enc, error_of(w, enc, fam_h), estimated_bytes(enc), None)
        near = {it[0].format for it in _pareto(list(scouts.values()), lambda it: it[2], lambda it: it[1],
                                               slack=NEAR_FORMAT_SLACK)}
        pool, jobs = [], []
        rows = P.check_rows(formats.as_rows(w))
        diag = np.diag(fam_h.matrix) if fam_h is not None else None
        for fmt, scout in scouts.items():
            f = formats.get(fmt)
            for m in methods(fmt, fam_h, opts, large=w.size > LARGE_TENSOR):   # every variant: bytes vs error
                if m is None or m == f.scale_methods[0]:          # float formats, and the scout's own method
                    pool.append(scout)
                elif fmt not in near:
                    continue
                elif m == "gptq":
                    jobs += gptq_jobs(rows, f, diag, memos.setdefault(fmt, {}))
                else:
                    pool += [(enc, error_of(w, enc, fam_h), estimated_bytes(enc), v)
                             for v, enc in encodings(w, fmt, m, fam_h, opts, memos.setdefault(fmt, {}))]
        if jobs:
            pool += [(enc, error_of(w, enc, fam_h), estimated_bytes(enc), v)
                     for v, enc in gptq_encodings(rows, fam_h, scout_variants(rows, fam_h, jobs, opts), opts)]
        pool = _pareto(pool, lambda it: it[2], lambda it: it[1], slack=1.03)
        exact = [Candidate(name, e.format, e.scale, e, tensor_sections(name, e, opts)[2], err,
                           fam_h is not None, v) for e, err, _, v in pool]
        out.extend(_pareto(exact, lambda c: c.bytes, lambda c: c.error))
    return out


def frontier(cands: list[Candidate]) -> list[Candidate]:
    """Per error family, the candidates no other beats on both bytes and error (sorted by bytes)."""
    out = []
    for fam in sorted({c.family for c in cands}):
        best_err = np.inf
        for c in sorted((c for c in cands if c.family == fam), key=lambda c: (c.bytes, c.error)):
            if c.error < best_err:
                out.append(c)
                best_err = c.error
    return out


def tensor_options(name: str, w: np.ndarray, hessian: Hessian | None, menu: tuple[str, ...], opts: PackOptions,
                   head: bool, control: bool) -> list[Candidate]:
    """One tensor's planner options (a worker task): a control tensor's one encoding, or the menu's frontier."""
    if control:
        return [best_candidate(name, w, menu[0], hessian, opts)]
    return frontier(candidate_set(name, w, hessian, menu, opts, also_data_free=head))
