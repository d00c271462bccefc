"""The routing rule: which positions get one bounded extra pass, as stored in an artifact's manifest.

Owns `RoutingRule` (signal, sign, threshold, target fraction, hard cap, extra passes, probe weights,
heuristic table, random seed, and the calibration's record of which signal won), its manifest form
(`to_dict` / `rule_from_manifest`), and the decision: candidates are positions whose score exceeds the
threshold; the optional causal token bucket then enforces the cap in position order without look-ahead.
The bucket's state is per sequence (window): a candidate at position t (0-based in its window) is taken
iff the number taken so far plus one is at most cap * (t + 1), so every prefix of every window, and hence
any set of windows, has a selected fraction <= cap. Decisions at t read only scores at positions <= t of
the same window, never the target, other windows or other sequences in the batch.

An oracle signal reads the target, so a RoutingRule refuses one: it can never be written into an artifact.
Must not compute signals (core/signals.py) or calibrate (core/route_calibrate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from common.errors import ConfigError, FormatError

POLICY = "adaptive"
CAP_EPS = 1e-9          # so that cap * (t + 1) landing on an integer in floating point still counts


class Signal:
    """Signal names (strings in the manifest). Scores are oriented so that higher means "route"."""

    ENTROPY = "entropy"
    PROB_MARGIN = "prob_margin"
    LOGIT_MARGIN = "logit_margin"
    UPDATE_SIZE = "update_size"
    COSINE = "cosine_saturation"
    RESIDUAL_NORM = "residual_norm"
    PROBE = "gain_probe"
    PROBE_HIDDEN = "gain_probe_hidden"
    RANDOM = "random"
    HEURISTIC = "heuristic"
    ORACLE_GAIN = "oracle_gain"
    ORACLE_LOSS = "oracle_loss"


SCALAR_SIGNALS = (Signal.ENTROPY, Signal.PROB_MARGIN, Signal.LOGIT_MARGIN, Signal.UPDATE_SIZE, Signal.COSINE,
                  Signal.RESIDUAL_NORM)
LEGAL_SIGNALS = SCALAR_SIGNALS + (Signal.PROBE, Signal.PROBE_HIDDEN, Signal.RANDOM, Signal.HEURISTIC)
CONTROL_SIGNALS = (Signal.RANDOM, Signal.HEURISTIC)
ORACLE_SIGNALS = (Signal.ORACLE_GAIN, Signal.ORACLE_LOSS)
ALL_SIGNALS = LEGAL_SIGNALS + ORACLE_SIGNALS
# Signals read from the K-exit distribution: the head must run on every position before the decision.
LOGIT_SIGNALS = (Signal.ENTROPY, Signal.PROB_MARGIN, Signal.LOGIT_MARGIN, Signal.PROBE)


def is_legal(signal: str) -> bool:
    return signal in LEGAL_SIGNALS


def needs_logits(signal: str) -> bool:
    return signal in LOGIT_SIGNALS


def _finite(x, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ConfigError(f"RoutingRule.{where}={x!r}: must be a finite number")
    return float(x)


@dataclass(frozen=True)
class RoutingRule:
    """One extra pass (K+1) for positions whose score exceeds `threshold`, under a hard cap on the fraction.

    signal          a legal signal name (Signal.*); oracles are refused
    sign            +1 or -1: the score is sign x the raw signal (fixed on calibration tokens)
    threshold       candidates are positions with score > threshold (compared in float32)
    target_fraction the fraction the threshold was calibrated to select on calibration (training) tokens
    cap_fraction    hard cap enforced by the causal token bucket; None: no bucket
    passes          K, the passes every position gets; extra_passes: the bounded extra (1 in this version)
    probe_weights   gain-probe weights over the signal's features (core/signals.py), probe_bias its bias
    heuristic_table mean calibration gain per (position bucket, token class) cell (core/signals.py)
    random_seed     seed of the per-position hash behind the random control
    selection       (signal, capture efficiency) of every candidate on the calibration tokens, best first
    calib_tokens    how many training tokens calibrated the threshold (and selection)
    """

    signal: str
    threshold: float
    target_fraction: float
    cap_fraction: float | None
    passes: int
    extra_passes: int = 1
    sign: int = 1
    probe_weights: tuple[float, ...] = ()
    probe_bias: float = 0.0
    heuristic_table: tuple[float, ...] = ()
    random_seed: int = 0
    selection: tuple[tuple[str, float], ...] = ()
    calib_tokens: int = 0

    def __post_init__(self) -> None:
        if self.signal in ORACLE_SIGNALS:
            raise ConfigError(f"RoutingRule.signal={self.signal!r} is an oracle: it reads the target, so it is "
                              f"illegal at inference and can never be stored in an artifact; use one of "
                              f"{list(LEGAL_SIGNALS)}")
        if self.signal not in LEGAL_SIGNALS:
            raise ConfigError(f"RoutingRule.signal={self.signal!r}: unknown signal; known: {list(LEGAL_SIGNALS)}")
        _finite(self.threshold, "threshold")
        if not 0 < _finite(self.target_fraction, "target_fraction") <= 1:
            raise ConfigError(f"RoutingRule.target_fraction={self.target_fraction}: must be in (0, 1]")
        if self.cap_fraction is not None:
            cap = _finite(self.cap_fraction, "cap_fraction")
            if not self.target_fraction <= cap <= 1:
                raise ConfigError(f"RoutingRule.cap_fraction={cap}: must be in [target_fraction="
                                  f"{self.target_fraction}, 1], or None for no cap")
        for name in ("passes", "random_seed", "calib_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "passes" else 0):
                raise ConfigError(f"RoutingRule.{name}={v!r}: must be a {'positive' if name == 'passes' else 'non-negative'} integer")
        if self.extra_passes != 1:
            raise ConfigError(f"RoutingRule.extra_passes={self.extra_passes!r}: this version supports exactly one "
                              f"extra pass")
        if self.sign not in (1, -1) or isinstance(self.sign, bool):
            raise ConfigError(f"RoutingRule.sign={self.sign!r}: must be 1 or -1")
        for i, w in enumerate(self.probe_weights):
            _finite(w, f"probe_weights[{i}]")
        _finite(self.probe_bias, "probe_bias")
        for i, w in enumerate(self.heuristic_table):
            _finite(w, f"heuristic_table[{i}]")
        if self.signal in (Signal.PROBE, Signal.PROBE_HIDDEN) and not self.probe_weights:
            raise ConfigError(f"RoutingRule.signal={self.signal!r} needs probe_weights (fit them with "
                              f"core.route_calibrate)")
        if self.signal == Signal.HEURISTIC and not self.heuristic_table:
            raise ConfigError("RoutingRule.signal='heuristic' needs a heuristic_table (fit it with "
                              "core.route_calibrate)")
        for i, item in enumerate(self.selection):
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise ConfigError(f"RoutingRule.selection[{i}]={item!r}: must be a (signal, score) pair")
            _finite(item[1], f"selection[{i}]")

    # --- the decision -----------------------------------------------------------------------------------
    def slots_per_window(self, length: int) -> int | None:
        """Most positions the bucket can select in a window of `length`: floor(cap * length); None: no cap."""
        if self.cap_fraction is None:
            return None
        return math.floor(self.cap_fraction * length + CAP_EPS)

    def decide(self, scores: torch.Tensor) -> tuple[torch.Tensor, int]:
        """scores [B,T] (float32, one window per row) -> (selected bool [B,T], positions the cap refused)."""
        candidates = scores > self.threshold
        if self.cap_fraction is None:
            return candidates, 0
        return token_bucket(candidates, self.cap_fraction)

    # --- the manifest form ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"policy": POLICY, "signal": self.signal, "sign": self.sign, "threshold": self.threshold,
             "target_fraction": self.target_fraction, "passes": self.passes, "extra_passes": self.extra_passes,
             "random_seed": self.random_seed, "calib_tokens": self.calib_tokens}
        if self.cap_fraction is not None:
            d["cap_fraction"] = self.cap_fraction
        if self.probe_weights:
            d["probe"] = {"weights": list(self.probe_weights), "bias": self.probe_bias}
        if self.heuristic_table:
            d["heuristic_table"] = list(self.heuristic_table)
        if self.selection:
            d["selection"] = [{"signal": s, "capture_efficiency": v} for s, v in self.selection]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RoutingRule:
        """The rule from its manifest form (policy "adaptive"); FormatError names the bad member."""
        known = {"policy", "signal", "sign", "threshold", "target_fraction", "cap_fraction", "passes",
                 "extra_passes", "random_seed", "calib_tokens", "probe", "heuristic_table", "selection"}
        if not isinstance(d, dict) or d.get("policy") != POLICY:
            raise FormatError(f"routing: expected an object with policy {POLICY!r}, got {str(d)[:80]}")
        unknown = sorted(set(d) - known)
        if unknown:
            raise FormatError(f"routing has unknown members {unknown}; this golfpack knows {sorted(known)}")
        try:
            probe = d.get("probe") or {}
            return cls(signal=d["signal"], threshold=d["threshold"], target_fraction=d["target_fraction"],
                       cap_fraction=d.get("cap_fraction"), passes=d["passes"],
                       extra_passes=d.get("extra_passes", 1), sign=d.get("sign", 1),
                       probe_weights=tuple(probe.get("weights", ())), probe_bias=probe.get("bias", 0.0),
                       heuristic_table=tuple(d.get("heuristic_table", ())),
                       random_seed=d.get("random_seed", 0), calib_tokens=d.get("calib_tokens", 0),
                       selection=tuple((s["signal"], s["capture_efficiency"]) for s in d.get("selection", ())))
        except KeyError as exc:
            raise FormatError(f"routing (policy {POLICY!r}) lacks the member {exc}") from None
        except (TypeError, AttributeError) as exc:
            raise FormatError(f"routing (policy {POLICY!r}) has a member of the wrong type: {exc}") from None
        except ConfigError as exc:
            raise FormatError(f"routing: {exc}") from None


def rule_from_manifest(routing: dict, n_passes: int) -> RoutingRule | None:
    """The artifact's rule, or None for {"policy": "uniform"} (every position gets K passes)."""
    policy = routing.get("policy") if isinstance(routing, dict) else None
    if policy == "uniform":
        if routing.get("passes", n_passes) != n_passes:
            raise FormatError(f"routing.passes={routing.get('passes')} differs from the model's n_passes={n_passes}")
        return None
    rule = RoutingRule.from_dict(routing)
    if rule.passes != n_passes:
        raise FormatError(f"routing.passes={rule.passes} differs from the model's n_passes={n_passes}")
    return rule


def token_bucket(candidates: torch.Tensor, cap: float) -> tuple[torch.Tensor, int]:
    """Causal cap per row: take candidate t iff taken-so-far + 1 <= a(t) = floor(cap * (t + 1)).

    -> (selected [B,T], candidates refused). The greedy count obeys n(t) = min(n(t-1) + c(t), a(t)) (a is
    non-decreasing), whose closed form n(t) = C(t) + min(0, min_{s<=t} (a(s) - C(s))), C the running
    candidate count, needs no loop over positions; n(t) at t depends on positions <= t only.
    """
    T = candidates.shape[1]
    allow = torch.floor(cap * torch.arange(1, T + 1, dtype=torch.float64) + CAP_EPS).to(torch.int64)   # [T]
    running = torch.cumsum(candidates.to(torch.int64), dim=1)
    slack = torch.cummin(allow[None, :] - running, dim=1).values.clamp(max=0)
    taken = running + slack
    selected = torch.diff(taken, dim=1, prepend=torch.zeros_like(taken[:, :1])) > 0
    return selected, int(candidates.sum()) - int(selected.sum())
