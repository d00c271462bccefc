"""Paired bootstrap over documents for differences in bits per byte between two policies.

Documents are the BOS-delimited spans of the scored stream: target i (token i+1) belongs to the document
holding token i+1. Resampling whole documents keeps the dependence between a document's positions; both
policies are resampled with the same documents (paired). Must not run models.
"""

from __future__ import annotations

import math

import numpy as np


def document_ids(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """Per target (tokens[1:]) the index of its document: the number of BOS tokens at or before it, minus 1
    (targets before the first BOS belong to document 0)."""
    toks = np.asarray(tokens)
    is_bos = (toks[1:] == bos_id).astype(np.int64)
    first = 1 if len(toks) and toks[0] == bos_id else 0
    return np.maximum(np.cumsum(is_bos) + first - 1, 0)


class PairedBootstrap:
    """Resampling weights drawn once, shared by every comparison: counts [n_boot, n_docs]."""

    def __init__(self, doc_ids: np.ndarray, token_bytes: np.ndarray, n_boot: int = 2000, seed: int = 0):
        self.doc_ids = np.asarray(doc_ids, dtype=np.int64)
        self.n_docs = int(self.doc_ids.max()) + 1 if len(self.doc_ids) else 0
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, self.n_docs, size=(n_boot, self.n_docs))
        self.counts = np.stack([np.bincount(d, minlength=self.n_docs) for d in draws]).astype(np.float64)
        self.doc_bytes = np.bincount(self.doc_ids, weights=np.asarray(token_bytes, dtype=np.float64),
                                     minlength=self.n_docs)

    def per_doc(self, token_nats: np.ndarray) -> np.ndarray:
        return np.bincount(self.doc_ids, weights=np.asarray(token_nats, dtype=np.float64), minlength=self.n_docs)

    def delta_bpb(self, nats_a: np.ndarray, nats_b: np.ndarray, level: float = 0.95) -> dict:
        """bpb(a) - bpb(b) on the full set and its percentile interval over document resamples."""
        diff = self.per_doc(nats_a) - self.per_doc(nats_b)
        point = float(diff.sum() / self.doc_bytes.sum() / math.log(2))
        boot = (self.counts @ diff) / (self.counts @ self.doc_bytes) / math.log(2)
        lo, hi = np.percentile(boot, [50 * (1 - level), 100 - 50 * (1 - level)])
        return {"delta": point, "lo": float(lo), "hi": float(hi)}
