"""The routing rule's step of a pack: calibrate it on the packed model, exactly as verify will run it.

A `RouteStep` is handed to the pack pipeline (quant/pipeline.py), which calls it on each confirming pack's
bytes: the artifact is read back and rebuilt (quant/unpack.py: the dequantized model), and the rule is
calibrated on the checkpoint's unseen training tokens (quant.calibrate.unseen_tokens) by
core.route_calibrate; its manifest form then replaces the uniform `routing`. Must not choose formats or
read files.
"""

from __future__ import annotations

import numpy as np

from core.route_calibrate import RouteOptions, calibrate
from packer.reader import read_artifact
from quant.unpack import build_model


class RouteStep:
    """artifact bytes -> the calibrated rule's manifest `routing` object (TRAINING tokens only)."""

    def __init__(self, tokens: np.ndarray, opts: RouteOptions) -> None:
        self.tokens, self.opts = tokens, opts

    def __call__(self, data: bytes) -> dict:
        return calibrate(build_model(read_artifact(data)), self.tokens, self.opts).to_dict()
