"""Scoring a token stream with a model: per-target cross-entropy from non-overlapping windows.

Shared by training's validation and by verify, so both measure the same thing: every target token
(positions 1..N-1) is scored exactly once; the last window may be shorter than the context.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.progress import Progress
from packer.errors import DataError

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


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
