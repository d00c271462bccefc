"""Calibrating a routing rule on held-out TRAINING tokens, on the model as the artifact will run it.

Owns: the dense calibration pass (pass-K features of every legal signal, and the per-position losses at K
and K+1), the fitted parts of the signals (each scalar signal's sign, the two gain probes' weights, the
heuristic's table), threshold calibration to a target fraction under the causal cap, capture efficiency
eta = (G - f*G_tot) / (G* - f*G_tot), and the default choice of signal: the legal one with the highest eta
on the calibration tokens (the runner-up and its margin are recorded in the rule).

The calibration tokens are split in two halves of whole windows: half A fits signs, probes and the
heuristic table; half B calibrates thresholds and scores the candidates. Never give this validation
tokens: the caller passes training tokens (cli: --calib-data). Must not decide (core/routing.py) or
define signal formulas (core/signals.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import ConfigError, DataError, UsageError
from core.routing import LEGAL_SIGNALS, SCALAR_SIGNALS, RoutingRule, Signal, token_bucket
from core.scoring import windows
from core.signals import (
    DEFAULT_SIGN,
    N_POS_BUCKETS,
    N_TOKEN_CLASSES,
    features,
    pass_k,
    probe_hidden_inputs,
    signal_score,
)

DEFAULT_ROUTE_TOKENS = 65_536   # training tokens that calibrate a rule when nobody says how many
CAP_MARGIN = 0.05            # default cap = target fraction + this (the threshold sits a little under it)
MIN_CELL_COUNT = 16          # heuristic cells with fewer calibration positions fall back to the mean gain


@dataclass(frozen=True)
class RouteOptions:
    """fraction: target selected fraction; signal: "auto" (highest capture) or a legal signal name;
    cap: hard cap on the fraction (None: fraction + CAP_MARGIN); no_cap: no token bucket at all."""

    fraction: float = 0.25
    signal: str = "auto"
    cap: float | None = None
    no_cap: bool = False
    calib_tokens: int | None = None       # None: DEFAULT_ROUTE_TOKENS (or what the caller's hold-out holds)
    batch_size: int = 32
    ridge: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise ConfigError(f"--route-fraction {self.fraction}: must be in (0, 1)")
        if self.signal != "auto" and self.signal not in LEGAL_SIGNALS:
            raise ConfigError(f"--route-signal {self.signal!r}: use 'auto' or one of {list(LEGAL_SIGNALS)} "
                              f"(oracles read the target and can never be packed)")
        if self.cap is not None and not self.fraction <= self.cap <= 1:
            raise ConfigError(f"--route-cap {self.cap}: must be in [--route-fraction {self.fraction}, 1]")
        if self.calib_tokens is not None and self.calib_tokens < 2 * 8 * 16:
            raise ConfigError(f"--route-calib-tokens {self.calib_tokens}: too few to calibrate on (at least 256)")
        if self.batch_size <= 0 or self.ridge < 0:
            raise ConfigError("RouteOptions.batch_size must be positive and ridge non-negative")

    @classmethod
    def from_options(cls, fraction: float, signal: str, cap: str, calib_tokens: int) -> RouteOptions | None:
        """From the command line's --route-* values: signal "none" means no rule (None); cap is "auto", "none"
        or a number."""
        if signal == "none":
            return None
        try:
            cap_value = None if cap in ("auto", "none") else float(cap)
        except ValueError:
            raise UsageError(f"--route-cap {cap!r}: give auto, none or a number in [fraction, 1]") from None
        return cls(fraction=fraction, signal=signal, cap=cap_value, no_cap=cap == "none", calib_tokens=calib_tokens)

    def cap_fraction(self) -> float | None:
        if self.no_cap:
            return None
        return self.cap if self.cap is not None else min(1.0, self.fraction + CAP_MARGIN)


@dataclass
class CalibBatch:
    """One batch of windows: their stream starts, every legal signal's features, per-position losses."""

    starts: list[int]
    feats: dict[str, torch.Tensor]
    nll_k: torch.Tensor
    nll_k1: torch.Tensor

    @property
    def gain(self) -> torch.Tensor:
        return self.nll_k - self.nll_k1


@torch.no_grad()
def collect(model, tokens: np.ndarray, batch_size: int = 32, full_only: bool = True,
            signals=LEGAL_SIGNALS) -> list[CalibBatch]:
    """Dense pass over non-overlapping windows (core.scoring.windows, batched as score_stream does)."""
    toks = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    L = model.cfg.seq_len
    if len(toks) < L + 1:
        raise DataError(f"{len(toks)} calibration tokens are fewer than one window of seq_len+1={L + 1}")
    wins = windows(len(toks), L)
    full = [w for w in wins if w[1] == L]
    rest = [] if full_only else [[w] for w in wins if w[1] != L]
    out = []
    for chunk in [full[i:i + batch_size] for i in range(0, len(full), batch_size)] + rest:
        n = chunk[0][1]
        x = torch.stack([toks[s:s + n] for s, _ in chunk])
        y = torch.stack([toks[s + 1:s + n + 1] for s, _ in chunk])
        pk = pass_k(model, x, list(signals) + [Signal.ENTROPY])       # the K-exit loss needs the head
        nll_k = F.nll_loss(pk.logp.reshape(-1, pk.logp.shape[-1]), y.reshape(-1), reduction="none").view(x.shape)
        logits1 = model.extra_pass(pk.h_k)
        nll_k1 = F.cross_entropy(logits1.reshape(-1, logits1.shape[-1]).float(), y.reshape(-1),
                                 reduction="none").view(x.shape)
        out.append(CalibBatch([s for s, _ in chunk], features(pk, signals), nll_k, nll_k1))
    return out


def split_halves(batches: list[CalibBatch]) -> tuple[list[CalibBatch], list[CalibBatch]]:
    """(A, B): alternate windows, so both halves see the whole calibration span."""
    def part(b: CalibBatch, sl: slice) -> CalibBatch:
        return CalibBatch(b.starts[sl], {k: v[sl] for k, v in b.feats.items()}, b.nll_k[sl], b.nll_k1[sl])
    a = [part(b, slice(0, None, 2)) for b in batches]
    bb = [part(b, slice(1, None, 2)) for b in batches if len(b.starts) > 1]
    return [b for b in a if b.starts], bb


# --- fitted parts ---------------------------------------------------------------------------------------------
@dataclass
class FittedParts:
    signs: dict[str, int] = field(default_factory=dict)
    probes: dict[str, tuple[tuple[float, ...], float]] = field(default_factory=dict)
    heuristic_table: tuple[float, ...] = ()
    seed: int = 0

    def rule(self, signal: str, threshold: float, fraction: float, cap: float | None, passes: int,
             selection=(), calib_tokens: int = 0) -> RoutingRule:
        w, b = self.probes.get(signal, ((), 0.0))
        return RoutingRule(signal=signal, threshold=threshold, target_fraction=fraction, cap_fraction=cap,
                           passes=passes, sign=self.signs.get(signal, 1), probe_weights=w, probe_bias=b,
                           heuristic_table=self.heuristic_table if signal == Signal.HEURISTIC else (),
                           random_seed=self.seed, selection=tuple(selection), calib_tokens=calib_tokens)

    def scores(self, signal: str, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        w, b = self.probes.get(signal, ((), 0.0))
        return signal_score(signal, feats, self.signs.get(signal, 1), w, b, self.heuristic_table, self.seed)


def _cat(batches: list[CalibBatch], key: str) -> torch.Tensor:
    return torch.cat([b.feats[key].reshape(-1, *b.feats[key].shape[2:]) for b in batches])


def _gains(batches: list[CalibBatch]) -> torch.Tensor:
    return torch.cat([b.gain.reshape(-1) for b in batches]).double()


def fit_ridge(x: torch.Tensor, y: torch.Tensor, ridge: float) -> tuple[tuple[float, ...], float]:
    """Least squares of y on standardized x with an L2 penalty, folded back to raw-feature weights."""
    x64, y64 = x.double(), y.double()
    mu, sd = x64.mean(0), x64.std(0).clamp_min(1e-8)
    z = (x64 - mu) / sd
    a = z.T @ z + ridge * torch.eye(z.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(a, z.T @ (y64 - y64.mean()))
    w_raw = w / sd
    bias = float(y64.mean() - (w_raw * mu).sum())
    return tuple(float(v) for v in w_raw.float()), float(np.float32(bias))


def fit_parts(a: list[CalibBatch], fraction: float, ridge: float, seed: int = 0,
              signals=LEGAL_SIGNALS) -> FittedParts:
    """Signs of the scalar signals (the orientation capturing more gain at `fraction`), probes, heuristic."""
    gain = _gains(a)
    k = max(1, round(fraction * len(gain)))
    parts = FittedParts(seed=seed)
    for s in SCALAR_SIGNALS:
        if s not in signals:
            continue
        raw = _cat(a, s).double()
        best = max((1, -1), key=lambda sg: (float(gain[torch.topk(sg * raw, k).indices].sum()),
                                            sg == DEFAULT_SIGN[s]))
        parts.signs[s] = best
    if Signal.PROBE in signals:
        parts.probes[Signal.PROBE] = fit_ridge(_cat(a, "probe_x"), gain, ridge)
    if Signal.PROBE_HIDDEN in signals:
        x = torch.cat([probe_hidden_inputs(b.feats).flatten(0, 1) for b in a])
        parts.probes[Signal.PROBE_HIDDEN] = fit_ridge(x, gain, ridge)
    if Signal.HEURISTIC in signals:
        cells = _cat(a, "cells")
        n_cells = N_POS_BUCKETS * N_TOKEN_CLASSES
        count = torch.bincount(cells, minlength=n_cells).double()
        total = torch.bincount(cells, weights=gain, minlength=n_cells)
        mean = torch.where(count >= MIN_CELL_COUNT, total / count.clamp_min(1), gain.mean())
        parts.heuristic_table = tuple(float(np.float32(v)) for v in mean)
    return parts


# --- thresholds and capture -------------------------------------------------------------------------------------
def realized(scores: list[torch.Tensor], threshold: float, cap: float | None) -> tuple[int, int]:
    """(selected, refused by the cap) over windows of scores [B,T] at `threshold`."""
    sel = ref = 0
    for s in scores:
        cand = s > threshold
        if cap is None:
            sel += int(cand.sum())
        else:
            chosen, r = token_bucket(cand, cap)
            sel, ref = sel + int(chosen.sum()), ref + r
    return sel, ref


def _by_length(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Windows of equal length stacked into one [W,T] tensor each (the bucket is per row: same result)."""
    groups: dict[int, list[torch.Tensor]] = {}
    for s in scores:
        groups.setdefault(s.shape[1], []).append(s)
    return [torch.cat(g) for g in groups.values()]


def calibrate_threshold(scores: list[torch.Tensor], fraction: float, cap: float | None) -> float:
    """A float32 threshold whose selected fraction (after the cap) on `scores` is closest to `fraction`."""
    scores = _by_length(scores)
    flat = torch.cat([s.reshape(-1) for s in scores]).float()
    n = flat.numel()
    desc = torch.sort(flat, descending=True).values
    # threshold = desc[k] selects the values strictly above it: k of them when desc[k-1] > desc[k].
    target = fraction * n
    lo, hi = 0, n - 1
    while lo < hi:                               # smallest k whose realized count reaches the target
        mid = (lo + hi) // 2
        if realized(scores, float(desc[mid]), cap)[0] >= target:
            hi = mid
        else:
            lo = mid + 1
    best = lo
    if lo > 0:
        below = realized(scores, float(desc[lo - 1]), cap)[0]
        if abs(below - target) < abs(realized(scores, float(desc[lo]), cap)[0] - target):
            best = lo - 1
    thr = float(desc[best])
    if not math.isfinite(thr):
        raise DataError("calibration scores are not finite; the model or signal is broken")
    return thr


def capture_efficiency(gain: np.ndarray, selected: np.ndarray) -> float:
    """eta = (G - f*G_tot) / (G* - f*G_tot): G the gain captured by `selected`, G* the best k = |selected|
    positions' gain (the oracle at the same fraction), f*G_tot what random selection captures on average."""
    gain = np.asarray(gain, dtype=np.float64).ravel()
    selected = np.asarray(selected, dtype=bool).ravel()
    k = int(selected.sum())
    if k == 0 or k == len(gain):
        return float("nan")
    f = k / len(gain)
    g, g_tot = float(gain[selected].sum()), float(gain.sum())
    g_star = float(np.sort(gain)[::-1][:k].sum())
    denom = g_star - f * g_tot
    return float((g - f * g_tot) / denom) if denom > 0 else float("nan")


def select_mask(parts: FittedParts, signal: str, batches: list[CalibBatch], threshold: float,
                cap: float | None) -> np.ndarray:
    """Flat selection over `batches` for a signal with fitted parts at a threshold (after the cap)."""
    out = []
    for b in batches:
        s = parts.scores(signal, b.feats)
        cand = s > threshold
        out.append((token_bucket(cand, cap)[0] if cap is not None else cand).reshape(-1).numpy())
    return np.concatenate(out)


def rule_for(signal: str, parts: FittedParts, b: list[CalibBatch], fraction: float, cap: float | None,
             passes: int) -> tuple[RoutingRule, float]:
    """The calibrated rule for `signal` on half B, and its capture efficiency there."""
    scores = [parts.scores(signal, x.feats) for x in b]
    thr = calibrate_threshold(scores, fraction, cap)
    rule = parts.rule(signal, thr, fraction, cap, passes)
    sel = select_mask(parts, signal, b, thr, cap)
    return rule, capture_efficiency(_gains(b).numpy(), sel)


def calibrate(model, calib_tokens: np.ndarray, opts: RouteOptions) -> RoutingRule:
    """The rule to embed: the requested signal, or (auto) the legal one with the highest capture."""
    toks = np.asarray(calib_tokens)[-((opts.calib_tokens or DEFAULT_ROUTE_TOKENS) + 1):]
    batches = collect(model, toks, opts.batch_size)
    a, b = split_halves(batches)
    if not a or not b:
        raise DataError(f"{len(toks)} calibration tokens give fewer than two windows of "
                        f"{model.cfg.seq_len}; give more training tokens (--calib-data / --calib-tokens)")
    candidates = list(LEGAL_SIGNALS) if opts.signal == "auto" else [opts.signal]
    parts = fit_parts(a, opts.fraction, opts.ridge, opts.seed, candidates)
    cap = opts.cap_fraction()
    results = {s: rule_for(s, parts, b, opts.fraction, cap, model.cfg.n_passes) for s in candidates}
    ranked = sorted(results, key=lambda s: (-_nan_low(results[s][1]), s))
    selection = tuple((s, _finite_or(results[s][1], -1.0)) for s in ranked)
    best = results[ranked[0]][0]
    n_tokens = sum(x.nll_k.numel() for x in batches)
    return parts.rule(best.signal, best.threshold, opts.fraction, cap, model.cfg.n_passes, selection, n_tokens)


def _nan_low(v: float) -> float:
    return v if math.isfinite(v) else -math.inf


def _finite_or(v: float, default: float) -> float:
    return float(v) if math.isfinite(v) else default
