"""Bits per byte, exactly as Parameter Golf's train_gpt.py eval_val defines it. The one place this formula lives.

Owns the per-target byte count and the nats -> bits-per-byte conversion. Must not build the byte tables
(core/tokenizer.py) nor run a model.
"""

from __future__ import annotations

import math

import numpy as np

from common.errors import DataError
from core.tokenizer import ByteTables


def target_byte_counts(prev_ids: np.ndarray, target_ids: np.ndarray, tables: ByteTables) -> np.ndarray:
    """UTF-8 bytes each target token stands for (int64, shape of `target_ids`).

    bytes = base_bytes[target] + (has_leading_space[target] and not is_boundary[prev]): a piece's '▁' is a
    real space byte except right after a boundary token (BOS), where it is the document's start.
    """
    prev = np.asarray(prev_ids)
    target = np.asarray(target_ids)
    if prev.shape != target.shape:
        raise DataError(f"prev_ids shape {prev.shape} differs from target_ids shape {target.shape}")
    size = tables.base_bytes.shape[0]
    for label, ids in (("prev_ids", prev), ("target_ids", target)):
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= size):
            raise DataError(f"{label} holds token ids outside [0, {size}) (min {int(ids.min())}, max "
                            f"{int(ids.max())}); the data does not match this tokenizer's byte tables")
    counts = tables.base_bytes[target].astype(np.int64)
    counts += tables.has_leading_space[target] & ~tables.is_boundary[prev]
    return counts


def bits_per_byte(total_nats: float, total_bytes: int) -> float:
    """Cross-entropy summed over targets (nats) divided by ln 2 and by the bytes those targets stand for."""
    if total_bytes <= 0:
        raise DataError(f"cannot compute bits per byte over {total_bytes} bytes; the evaluated tokens cover "
                        "no text (too few tokens, or only BOS tokens)")
    return float(total_nats) / math.log(2.0) / int(total_bytes)
