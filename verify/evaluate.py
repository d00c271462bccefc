"""Loss and bits per byte of a model on a token stream, Parameter Golf's way.

Non-overlapping windows of the model's context over the whole stream: every target token (positions 1..N-1)
is scored exactly once; the last window may be shorter. bpb uses the tokenizer's byte tables (core/bpb.py).
Also the unigram floor: a unigram model fitted on training-token counts (add-one smoothing).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.bpb import bits_per_byte, target_byte_counts
from core.progress import Progress
from packer.errors import DataError

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


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


def windows(n_tokens: int, seq_len: int) -> list[tuple[int, int]]:
    """(start, length) of non-overlapping input windows covering targets 1..n_tokens-1."""
    n_targets = n_tokens - 1
    return [(s, min(seq_len, n_targets - s)) for s in range(0, n_targets, seq_len)]


@torch.no_grad()
def score_stream(logits_fn: LogitsFn, tokens: np.ndarray, seq_len: int, batch_size: int = 32,
                 progress: bool = False) -> np.ndarray:
    """Per-target cross-entropy (nats) for targets tokens[1:], from non-overlapping windows."""
    toks = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    if len(toks) < 2:
        raise DataError(f"need at least 2 tokens to evaluate, got {len(toks)}")
    wins = windows(len(toks), seq_len)
    out = np.empty(len(toks) - 1, dtype=np.float64)
    full = [w for w in wins if w[1] == seq_len]
    rest = [w for w in wins if w[1] != seq_len]
    bar = Progress("eval", len(wins), enabled=progress)
    done = 0
    for chunk in [full[i:i + batch_size] for i in range(0, len(full), batch_size)] + [[w] for w in rest]:
        L = chunk[0][1]
        x = torch.stack([toks[s:s + L] for s, _ in chunk])
        y = torch.stack([toks[s + 1:s + L + 1] for s, _ in chunk])
        logits = logits_fn(x)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="none")
        nll = nll.view(len(chunk), L).double().numpy()
        for (s, _), row in zip(chunk, nll):
            out[s:s + L] = row
        done += len(chunk)
        bar.update(done)
    return out


def evaluate(logits_fn: LogitsFn, tokens: np.ndarray, tables, seq_len: int, batch_size: int = 32,
             progress: bool = False) -> EvalResult:
    tokens = np.asarray(tokens)
    t0 = time.perf_counter()
    nats = score_stream(logits_fn, tokens, seq_len, batch_size, progress)
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
