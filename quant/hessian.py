"""A layer's input Hessian: the type the calibration produces and the quantizers consume. Imports no torch, so the
worker processes that encode tensors (quant/workers.py) never load it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Hessian:
    """sum over calibration inputs of x x^T (float32 [C,C]) and how many input rows went into it."""

    matrix: np.ndarray
    rows: int
    cache: dict = field(default_factory=dict, repr=False, compare=False)   # e.g. GPTQ's factorisation
