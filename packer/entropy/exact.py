"""The numbers an ANS encoder and decoder must compute identically (decoder side; pure numpy).

The sigma grid of model 2 (also used by model 3), the means and decode waves of referenced rows, and the
bins and weights of stored tables. Everything here is exact (integer arithmetic, ldexp of literals, IEEE
division), so every platform gets the same floats. Must not import torch.
"""

from __future__ import annotations

import numpy as np

# sigma = 2^(k/8) for integer k in [K_MIN, K_MAX]; computed exactly (ldexp of 8 literals), so encoder and
# decoder on any platform get bit-identical float64 parameters.
K_MIN, K_MAX = -40, 72
_OCTAVE = np.array([1.0, 1.0905077326652577, 1.189207115002721, 1.2968395546510096, 1.4142135623730951,
                    1.5422108254079407, 1.681792830507429, 1.8340080864093424])
SHAPES = ("gauss", "laplace")


def sigma_for_index(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, np.int64)
    return np.ldexp(_OCTAVE[k % 8], (k // 8).astype(np.int32))


def ref_means4(beta16: np.ndarray, base_codes: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Means (in quarter code units) of rows predicted from a base row: round(beta * x_base), integer math."""
    m4 = (beta16.astype(np.int64)[:, None] * base_codes.astype(np.int64) * 4 + 8) // 16
    return np.clip(m4, 4 * lo, 4 * hi)


def ref_waves(parent: np.ndarray) -> np.ndarray:
    """Decode wave of every row: 0 for base rows, 1 + the parent's wave for predicted rows (parent < row)."""
    wave = np.zeros(parent.size, np.int64)
    for i in np.flatnonzero(parent >= 0).tolist():
        wave[i] = wave[parent[i]] + 1
    return wave


def wave_rows(parent: np.ndarray) -> list[np.ndarray]:
    """Rows by decode wave, [wave 0 (base rows), wave 1, ...], each ascending: one stable sort, so a deep
    chain of references costs O(R log R) here, not O(R x waves)."""
    wave = ref_waves(parent)
    order = np.argsort(wave, kind="stable")
    return np.split(order, np.cumsum(np.bincount(wave))[:-1])


def bin_layout(lo: int, hi: int, fold: bool, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin of each symbol lo..hi, symbols per bin) of a piecewise-constant table: bins of `width` codes,
    over the code itself or (fold) over |code| with 0 alone, so a bin's mass is shared by its symbols."""
    sym = np.arange(lo, hi + 1)
    if fold:
        m = np.abs(sym)
        b = np.where(m == 0, 0, 1 + (m - 1) // width)
    else:
        b = (sym - lo) // width
    _, b = np.unique(b, return_inverse=True)           # dense bin numbers: no empty bins
    return b, np.bincount(b)


def table_probabilities(bin_counts: np.ndarray, bins: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per-symbol float64 weights for constriction (exact IEEE division: identical on every platform)."""
    return np.asarray(bin_counts, np.float64)[bins] / sizes[bins].astype(np.float64)
