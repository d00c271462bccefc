"""Loss and bits per byte of a model on a token stream, Parameter Golf's way.

Non-overlapping windows of the model's context over the whole stream (or sliding windows advanced by a
stride, core/scoring.py): every target token (positions 1..N-1) is scored exactly once; the last window may
be shorter. bpb uses the tokenizer's byte tables (core/bpb.py).
Also the unigram floor: a unigram model fitted on training-token counts (add-one smoothing).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from core.bpb import bits_per_byte, target_byte_counts
from core.distributed import DistContext
from core.scoring import LogitsFn, score_stream


@dataclass
class EvalResult:
    val_loss: float                 # nats per token
    val_bpb: float
    tokens: int
    bytes: int
    seconds: float
    tokens_per_second: float
    token_nats: np.ndarray          # per scored target, float64
    token_bytes: np.ndarray         # per scored target, int64

    def summary(self) -> dict:
        return {"val_loss": self.val_loss, "val_bpb": self.val_bpb, "tokens": self.tokens, "bytes": self.bytes,
                "seconds": self.seconds, "tokens_per_second": self.tokens_per_second}


def evaluate(logits_fn: LogitsFn, tokens: np.ndarray, tables, seq_len: int, batch_size: int = 32,
             progress: bool = False, stride: int | None = None, dist: DistContext | None = None) -> EvalResult:
    """Loss and bpb over every target; `stride` selects sliding-window scoring (None: non-overlapping); `dist`
    the device and, under torchrun, this rank's share of the windows (core/scoring.py)."""
    tokens = np.asarray(tokens)
    t0 = time.perf_counter()
    nats = score_stream(logits_fn, tokens, seq_len, batch_size, progress, stride=stride, dist=dist)
    seconds = time.perf_counter() - t0
    nbytes = target_byte_counts(tokens[:-1], tokens[1:], tables).astype(np.int64)
    total_bytes = int(nbytes.sum())
    return EvalResult(float(nats.mean()), bits_per_byte(float(nats.sum()), total_bytes), len(nats),
                      total_bytes, seconds, len(nats) / seconds if seconds > 0 else math.inf, nats, nbytes)


def unigram_bpb(train_tokens: np.ndarray, val_tokens: np.ndarray, tables, vocab_size: int) -> float:
    """bpb of a unigram model with add-one smoothing fitted on training tokens, on the val targets."""
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size)[:vocab_size] + 1.0
    logp = np.log(counts / counts.sum())
    val = np.asarray(val_tokens, dtype=np.int64)
    nats = -logp[val[1:]].sum()
    nbytes = int(target_byte_counts(val[:-1], val[1:], tables).sum())
    return bits_per_byte(float(nats), nbytes)
