"""Per-position routing signals, computed from pass-K quantities only, and the two (illegal) oracles.

Owns the signal formulas: from the K-exit log-probabilities (entropy, probability margin p1 - p2, logit
margin z1 - z2), from the states after passes K-1 and K (last-update size |h_K - h_{K-1}| / |h_K|, cosine
saturation cos(h_K, h_{K-1}), residual norm |h_K| / sqrt(D)), the gain probes' inputs and scores, the
random control (a hash of the position and the tokens at and before it, so it is seeded per position and
independent of the batch), the position/token-class heuristic, and the oracles (the actual gain of the extra
pass and the K-exit loss; they read the target). Every legal score at position t is a function of that
position's own pass-K quantities (and, for random/heuristic, of its index and tokens <= t).

`features` computes what a set of signals needs from one batch; `score` turns features into a rule's
scores; online inference and offline calibration both go through these two, so their decisions agree bit
for bit. Must not decide (core/routing.py), calibrate (core/route_calibrate.py) or run passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.routing import LOGIT_SIGNALS, ORACLE_SIGNALS, SCALAR_SIGNALS, RoutingRule, Signal

EPS = 1e-12
# Raw scalar signals are oriented by the rule's sign; these are the orientations before calibration.
DEFAULT_SIGN = {Signal.ENTROPY: 1, Signal.PROB_MARGIN: -1, Signal.LOGIT_MARGIN: -1, Signal.UPDATE_SIZE: 1,
                Signal.COSINE: -1, Signal.RESIDUAL_NORM: 1}
PROBE_FEATURES = ("entropy", "prob_margin", "logit_margin", "log_update_size", "cosine_saturation",
                  "log_residual_norm")
PROBE_HIDDEN_SCALARS = ("log_update_size", "cosine_saturation", "log_residual_norm")   # + the unit state h_K/rms


def probe_hidden_inputs(feats: dict[str, torch.Tensor]) -> torch.Tensor:
    """The hidden probe's feature vectors [.., 3 + D] (for fitting): its scalars and the unit state."""
    unit = feats["state"] * feats["inv_rms"][..., None]
    return torch.cat([feats["probe_hidden_scalars"], unit], dim=-1)
N_POS_BUCKETS = 8            # heuristic: position bucket min(floor(log2(t + 1)), 7)
N_TOKEN_CLASSES = 8          # heuristic: token class = id * 8 // vocab (sentencepiece ids rise with rarity)
HEURISTIC_TIE = 1e-5         # heuristic ties are broken by the random hash, scaled by this
_P = 2_147_483_647           # Lehmer / Park-Miller modulus (2^31 - 1) for the random control
_A = 48_271


@dataclass
class PassK:
    """What the model has after pass K for a batch of windows: input tokens [B,T], states [B,T,D], and the
    K-exit logits [B,T,V] (None when no signal needs the head). `logp` (log-softmax) is computed once, on
    first use, and shared with the loss."""

    tokens: torch.Tensor
    h_prev: torch.Tensor
    h_k: torch.Tensor
    logits: torch.Tensor | None
    vocab_size: int
    _logp: torch.Tensor | None = None

    @property
    def logp(self) -> torch.Tensor:
        if self.logits is None:
            raise ValueError("signals reading the K-exit distribution need the K-exit logits (PassK.logits)")
        if self._logp is None:
            self._logp = F.log_softmax(self.logits.float(), dim=-1)
        return self._logp

    @property
    def has_logp(self) -> bool:
        return self._logp is not None


def probe_dim(signal: str, d_model: int) -> int:
    """Number of probe weights: the features of Signal.PROBE, or of Signal.PROBE_HIDDEN (+ D state dims)."""
    return len(PROBE_FEATURES) if signal == Signal.PROBE else len(PROBE_HIDDEN_SCALARS) + d_model


# --- primitive pieces ----------------------------------------------------------------------------------------
class _Memo:
    """Shared intermediate values of one batch, so each is computed once whatever the set of signals."""

    def __init__(self, pk: PassK) -> None:
        self.pk, self.cache = pk, {}

    def get(self, key: str) -> torch.Tensor:
        if key not in self.cache:
            self.cache[key] = getattr(self, "_" + key)()
        return self.cache[key]

    def _top2(self):
        return self.pk.logits.float().topk(2, dim=-1).values

    def _entropy(self):
        logp = self.pk.logp
        return -(logp.exp() * logp).sum(-1)

    def _prob_margin(self):
        top, lse = self.get("top2"), torch.logsumexp(self.pk.logits.float(), dim=-1)
        return (top[..., 0] - lse).exp() - (top[..., 1] - lse).exp()

    def _logit_margin(self):
        top = self.get("top2")
        return top[..., 0] - top[..., 1]

    def _norm_k(self):
        return self.pk.h_k.norm(dim=-1)

    def _update_size(self):
        return (self.pk.h_k - self.pk.h_prev).norm(dim=-1) / (self.get("norm_k") + EPS)

    def _cosine_saturation(self):
        pk = self.pk
        return (pk.h_k * pk.h_prev).sum(-1) / (self.get("norm_k") * pk.h_prev.norm(dim=-1) + EPS)

    def _residual_norm(self):
        return self.get("norm_k") / self.pk.h_k.shape[-1] ** 0.5

    def _log_update_size(self):
        return torch.log(self.get("update_size") + EPS)

    def _log_residual_norm(self):
        return torch.log(self.get("residual_norm") + EPS)

    def _probe_x(self):
        return torch.stack([self.get(k) for k in PROBE_FEATURES], dim=-1)

    def _probe_hidden_scalars(self):
        return torch.stack([self.get(k) for k in PROBE_HIDDEN_SCALARS], dim=-1)

    def _state(self):
        return self.pk.h_k

    def _inv_rms(self):
        return torch.rsqrt(self.get("norm_k").square() / self.pk.h_k.shape[-1] + EPS)

    def _tokens(self):
        return self.pk.tokens

    def _cells(self):
        return heuristic_cells(self.pk.tokens, self.pk.vocab_size)


def random_uniform(tokens: torch.Tensor, seed: int) -> torch.Tensor:
    """[B,T] float32 in [0, 1): a hash of (seed, position t, token t, token t-1); causal and per position."""
    B, T = tokens.shape
    prev = torch.cat([torch.full((B, 1), -1, dtype=torch.int64), tokens[:, :-1].to(torch.int64)], dim=1)
    v = torch.full((B, T), (seed % (_P - 1)) + 1, dtype=torch.int64)
    for part in (torch.arange(T, dtype=torch.int64).expand(B, T), tokens.to(torch.int64), prev + 2):
        v = (v * _A + part) % _P
        v = (v * _A) % _P
        v = (v * _A) % _P
    return (v.to(torch.float64) / _P).to(torch.float32)


def heuristic_cells(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[B,T] int64 cell of each position: position bucket x N_TOKEN_CLASSES + token class of the input."""
    T = tokens.shape[1]
    pos = torch.arange(T, dtype=torch.float64)
    pb = torch.clamp(torch.floor(torch.log2(pos + 1)), max=N_POS_BUCKETS - 1).to(torch.int64)
    tc = torch.clamp(tokens.to(torch.int64) * N_TOKEN_CLASSES // vocab_size, 0, N_TOKEN_CLASSES - 1)
    return pb[None, :] * N_TOKEN_CLASSES + tc


# --- features and scores -------------------------------------------------------------------------------------
def required(signals) -> set[str]:
    """Feature keys the given signals read."""
    need: set[str] = set()
    for s in signals:
        if s in (Signal.ENTROPY, Signal.PROB_MARGIN, Signal.LOGIT_MARGIN) or s in (Signal.UPDATE_SIZE, Signal.COSINE, Signal.RESIDUAL_NORM):
            need.add(s)
        elif s == Signal.PROBE:
            need.add("probe_x")
        elif s == Signal.PROBE_HIDDEN:
            need.update(("probe_hidden_scalars", "state", "inv_rms"))
        elif s == Signal.RANDOM:
            need.add("tokens")
        elif s == Signal.HEURISTIC:
            need.update(("tokens", "cells"))
    return need


def features(pk: PassK, signals) -> dict[str, torch.Tensor]:
    """The per-position features [B,T] (probe inputs [B,T,F]) that `signals` read, from one batch."""
    memo = _Memo(pk)
    return {k: memo.get(k) for k in sorted(required(signals))}


def score(rule: RoutingRule, feats: dict[str, torch.Tensor]) -> torch.Tensor:
    """The rule's score [B,T] (float32; higher = route) from `features(pk, [rule.signal])`."""
    return signal_score(rule.signal, feats, rule.sign, rule.probe_weights, rule.probe_bias,
                        rule.heuristic_table, rule.random_seed)


def signal_score(signal: str, feats: dict[str, torch.Tensor], sign: int = 1, probe_weights=(),
                 probe_bias: float = 0.0, heuristic_table=(), random_seed: int = 0) -> torch.Tensor:
    if signal in SCALAR_SIGNALS:
        raw = feats[signal]
        return raw if sign == 1 else -raw
    if signal == Signal.PROBE:
        x = feats["probe_x"]
        w = torch.tensor(probe_weights, dtype=torch.float32)
        if w.numel() != x.shape[-1]:
            raise ValueError(f"{signal}: {w.numel()} probe weights for {x.shape[-1]} features")
        return x @ w + float(probe_bias)
    if signal == Signal.PROBE_HIDDEN:                  # w . [scalars, h_K / rms(h_K)] without the unit vector
        sc, h = feats["probe_hidden_scalars"], feats["state"]
        w = torch.tensor(probe_weights, dtype=torch.float32)
        if w.numel() != sc.shape[-1] + h.shape[-1]:
            raise ValueError(f"{signal}: {w.numel()} probe weights for {sc.shape[-1] + h.shape[-1]} features")
        n = sc.shape[-1]
        return sc @ w[:n] + (h @ w[n:]) * feats["inv_rms"] + float(probe_bias)
    if signal == Signal.RANDOM:
        return random_uniform(feats["tokens"], random_seed)
    if signal == Signal.HEURISTIC:
        table = torch.tensor(heuristic_table, dtype=torch.float32)
        return table[feats["cells"]] + HEURISTIC_TIE * random_uniform(feats["tokens"], random_seed)
    raise ValueError(f"{signal!r} is not a legal signal (oracles are scored by oracle_score)")


def oracle_score(signal: str, nll_k: torch.Tensor, nll_k1: torch.Tensor) -> torch.Tensor:
    """ILLEGAL: the oracles read the target. Gain of the extra pass, or the K-exit loss."""
    if signal not in ORACLE_SIGNALS:
        raise ValueError(f"{signal!r} is not an oracle")
    return (nll_k - nll_k1) if signal == Signal.ORACLE_GAIN else nll_k


def pass_k(model, tokens: torch.Tensor, signals) -> PassK:
    """Run passes 1..K; the head too when one of `signals` reads the K-exit distribution."""
    if any(s in LOGIT_SIGNALS for s in signals):
        ex = model.forward_exits(tokens)
        return PassK(tokens, ex.h_prev, ex.h_k, ex.logits, model.cfg.vocab_size)
    h_prev, h_k = model.states(tokens)
    return PassK(tokens, h_prev, h_k, None, model.cfg.vocab_size)
