"""Scoring a token stream with a model: per-target cross-entropy, every target scored exactly once.

Shared by training's validation and by verify, so both measure the same thing. Two window protocols over
targets 1..N-1: non-overlapping windows of the context length (`windows`, the default; the last window may
be shorter), and sliding windows (`sliding_windows`): windows of length seq_len advanced by `stride`, each
scoring only the targets the previous window did not reach (the last `stride` of a full window; the first
window scores all of its targets), so every target but the first seq_len gets at least seq_len - stride
tokens of context. With stride == seq_len both protocols are the same windows.

Under torchrun (a core.distributed.DistContext with a process group) each rank scores every world-th batch of
windows and the per-target losses are all-reduced in float64: targets are disjoint across ranks, so every rank
then holds exactly the array one process computes, and sums over it in the same order (the same bpb to the
last digit). Batches run on the context's device; losses come back to the CPU as float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import DataError
from common.progress import Progress
from core.distributed import DistContext

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def windows(n_tokens: int, seq_len: int) -> list[tuple[int, int]]:
    """(start, length) of non-overlapping input windows covering targets 1..n_tokens-1."""
    n_targets = n_tokens - 1
    return [(s, min(seq_len, n_targets - s)) for s in range(0, n_targets, seq_len)]


def sliding_windows(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, length, first scored position in the window) of sliding windows covering targets 1..n_tokens-1.

    Window k starts at k * stride; it scores its positions from where window k-1 ended, so the scored
    ranges tile the targets exactly. The last window may be shorter than seq_len.
    """
    if not isinstance(stride, int) or not 1 <= stride <= seq_len:
        raise DataError(f"sliding-window stride {stride!r} must be an integer in 1..seq_len={seq_len}")
    n_targets = n_tokens - 1
    out, done, start = [], 0, 0
    while done < n_targets:
        length = min(seq_len, n_targets - start)
        out.append((start, length, done - start))
        done = start + length
        start += stride
    return out


@torch.no_grad()
def score_windows(logits_fn: LogitsFn, tokens: np.ndarray, wins: list[tuple[int, int, int]],
                  batch_size: int = 32, progress: bool = False, dist: DistContext | None = None) -> np.ndarray:
    """Per-target cross-entropy (nats, float64) for targets tokens[1:], each from the one window scoring it.

    `wins` are (start, length, first scored position); windows of equal (length, first scored) are batched.
    With `dist`, batches run on its device, and under torchrun this rank scores batches rank, rank + world,
    ... and the results are all-reduced (module docstring).
    """
    toks = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    if len(toks) < 2:
        raise DataError(f"need at least 2 tokens to evaluate, got {len(toks)}")
    out = np.zeros(len(toks) - 1, dtype=np.float64)
    times = np.zeros(len(toks) - 1, dtype=np.int64)
    groups: dict[tuple[int, int], list[int]] = {}
    for s, length, first in wins:
        groups.setdefault((length, first), []).append(s)
    chunks = [(key, starts[i:i + batch_size]) for key, starts in groups.items()
              for i in range(0, len(starts), batch_size)]
    device = dist.device if dist is not None else torch.device("cpu")
    if dist is not None and dist.distributed:
        chunks = chunks[dist.rank::dist.world_size]
    bar = Progress("eval", sum(len(s) for _, s in chunks), enabled=progress)
    done = 0
    for (length, first), starts in chunks:
        x = torch.stack([toks[s:s + length] for s in starts]).to(device)
        y = torch.stack([toks[s + first + 1:s + length + 1] for s in starts]).to(device)
        logits = logits_fn(x)[:, first:]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="none")
        nll = nll.view(len(starts), length - first).double().cpu().numpy()
        for s, row in zip(starts, nll):
            out[s + first:s + length] = row
            times[s + first:s + length] += 1
        done += len(starts)
        bar.update(done)
    if dist is not None and dist.distributed:
        out, times = _all_reduced(dist, out), _all_reduced(dist, times)
    if (times != 1).any():
        bad = int(np.flatnonzero(times != 1)[0])
        raise DataError(f"the windows score target index {bad} {int(times[bad])} times; every target must be "
                        f"scored exactly once (the window list does not tile the stream)")
    return out


def _all_reduced(dist: DistContext, arr: np.ndarray) -> np.ndarray:
    """The elementwise sum of `arr` over ranks (float64 or int64: exact for disjoint supports)."""
    t = torch.from_numpy(arr).to(dist.device)
    return dist.all_reduce_(t).cpu().numpy()


def score_stream(logits_fn: LogitsFn, tokens: np.ndarray, seq_len: int, batch_size: int = 32,
                 progress: bool = False, stride: int | None = None, dist: DistContext | None = None) -> np.ndarray:
    """Per-target cross-entropy (nats) for targets tokens[1:]: non-overlapping windows, or sliding windows
    advanced by `stride` when it is given."""
    n = len(tokens)
    wins = ([(s, length, 0) for s, length in windows(n, seq_len)] if stride is None
            else sliding_windows(n, seq_len, stride))
    return score_windows(logits_fn, tokens, wins, batch_size, progress, dist)
