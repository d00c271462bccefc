"""GPTQ (Frantar et al. 2022): quantize a weight matrix column by column, feeding each column's rounding error
back into the columns not yet quantized, weighted by the inverse Hessian of the layer's inputs.

Scales are fixed before the sweep (from quant.primitives' clip choices on the original weights, per row or
per group), so groups and act-order combine freely ("static groups"). Rounding is quant.primitives'
quantize_with_scales, so the codes decode with the same formula as every other integer format.
Owns the sweep only: Hessians come from quant/calibrate.py; choosing among methods is quant/candidates.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError, QuantError
from quant import primitives as P


@dataclass(frozen=True)
class GPTQConfig:
    damp_frac: float = 0.01        # dampening: add damp_frac * mean(diag H) to the diagonal
    block_size: int = 128          # columns per lazy-batch block
    act_order: bool = True         # quantize columns in order of decreasing diag(H)

    def __post_init__(self) -> None:
        if not 0 <= self.damp_frac < 10:
            raise ConfigError(f"GPTQConfig.damp_frac={self.damp_frac}: must be in [0, 10)")
        if not isinstance(self.block_size, int) or self.block_size < 1:
            raise ConfigError(f"GPTQConfig.block_size={self.block_size}: must be a positive integer")


def _inverse_cholesky(h: np.ndarray, damp_frac: float) -> np.ndarray:
    """Upper Cholesky factor U of (H + damp I)^-1 (so that (H + damp I)^-1 = U^T U)."""
    c = h.shape[0]
    damp = damp_frac * float(np.mean(np.diag(h))) if c else 0.0
    for attempt in range(6):
        try:
            hinv = np.linalg.inv(h + damp * np.eye(c))
            return np.linalg.cholesky(hinv).T
        except np.linalg.LinAlgError:
            damp = max(damp * 10.0, 1e-8 * max(float(np.mean(np.diag(h))), 1e-12))
    raise QuantError(f"GPTQ: the Hessian ({c}x{c}) is not positive definite even with dampening {damp:.3g}; "
                     f"use more calibration tokens or a larger damp_frac")


def prepare(h: np.ndarray, cfg: GPTQConfig = GPTQConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(column order, upper Cholesky factor of the damped inverse Hessian in that order): the part of GPTQ
    that depends on the Hessian only, so that one tensor's formats can share it."""
    H = np.array(h, dtype=np.float64)
    C = H.shape[0]
    dead = np.diag(H) == 0                       # inputs never seen: no feedback through them
    H[dead, dead] = 1.0
    perm = np.argsort(-np.diag(H), kind="stable") if cfg.act_order else np.arange(C)
    return perm, _inverse_cholesky(H[np.ix_(perm, perm)], cfg.damp_frac)


def gptq_codes(w: np.ndarray, h: np.ndarray, scales: np.ndarray, bits: int, group: int | None = None,
               cfg: GPTQConfig = GPTQConfig(), prepared: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """int8 codes [R,C] for w [R,C] with fixed fp16 scales [R] or [R,G] and input Hessian h = sum x x^T [C,C]
    (`prepared`: prepare(h, cfg), if already computed)."""
    return gptq_codes_batch(w, h, [(scales, bits, group)], cfg, prepared)[0]


def gptq_codes_batch(w: np.ndarray, h: np.ndarray, jobs: list[tuple[np.ndarray, int, int | None]],
                     cfg: GPTQConfig = GPTQConfig(), prepared: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> list[np.ndarray]:
    """GPTQ codes of w for several (scales, bits, group) at once, in one column sweep: every job's rows are
    stacked (the Hessian, its factor and the column order are shared, and GPTQ treats rows independently), so
    the Python loop over columns runs once instead of once per job. Each job's codes equal what a sweep of its
    rows alone computes (the same arithmetic per row)."""
    w = P.check_rows(w)
    R, C = w.shape
    if h.shape != (C, C):
        raise QuantError(f"GPTQ: Hessian shape {h.shape} does not match the weight's {C} input columns")
    if C == 0 or R == 0 or not jobs:
        return [np.zeros((R, C), dtype=np.int8) for _ in jobs]
    perm, U = prepared if prepared is not None else prepare(h, cfg)
    V = len(jobs)
    W = np.tile(w.astype(np.float64)[:, perm], (V, 1))                                   # [V*R, C]
    S = np.ascontiguousarray(np.concatenate([np.broadcast_to(P.expand_scales(s, C, g), (R, C))
                                             for s, _, g in jobs])[:, perm].T)           # [C, V*R] f32
    qmax = np.repeat(np.array([P.qmax_for_bits(b) for _, b, _ in jobs], dtype=np.float32), R)
    Q = np.zeros((V * R, C), dtype=np.int8)
    for i1 in range(0, C, cfg.block_size):
        i2 = min(i1 + cfg.block_size, C)
        W1 = W[:, i1:i2].copy()
        E1 = np.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            s = S[i1 + i]
            q = P.round_codes(W1[:, i].astype(np.float32), s, qmax)
            Q[:, i1 + i] = q
            err = (W1[:, i] - P.scale_codes(q, s).astype(np.float64)) / U1[i, i]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            E1[:, i] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    codes = np.empty_like(Q)
    codes[:, perm] = Q
    return [codes[k * R:(k + 1) * R] for k in range(V)]
