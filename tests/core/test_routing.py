"""The routing rule: refusing oracles, its manifest form, the causal token bucket, signals and calibration."""

import math

import numpy as np
import pytest
import torch

from common.errors import ConfigError, FormatError
from core.config import ModelConfig
from core.model import RecurrentLM
from core.route_calibrate import (
    RouteOptions,
    calibrate,
    capture_efficiency,
    collect,
    fit_parts,
    rule_for,
    split_halves,
)
from core.routing import LEGAL_SIGNALS, ORACLE_SIGNALS, RoutingRule, rule_from_manifest, token_bucket
from core.signals import features, pass_k, random_uniform, score

pytestmark = pytest.mark.usefixtures("one_torch_thread")


CFG = ModelConfig(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, n_passes=2, seq_len=32)


def rule(**kw) -> RoutingRule:
    base = {"signal": "entropy", "threshold": 1.5, "target_fraction": 0.25, "cap_fraction": 0.3, "passes": 2}
    return RoutingRule(**{**base, **kw})


def markov_tokens(n: int, seed: int) -> np.ndarray:
    """A token stream with structure (so signals vary): a noisy cycle, with BOS (1) every 200 tokens."""
    rng = np.random.default_rng(seed)
    toks = np.empty(n, dtype=np.int64)
    t = 5
    for i in range(n):
        t = (t + 1 + (rng.random() < 0.3) * rng.integers(0, 7)) % 60 + 4
        toks[i] = 1 if i % 200 == 0 else t
    return toks


@pytest.mark.parametrize("oracle", ORACLE_SIGNALS)
def test_oracle_rule_is_refused_everywhere(oracle):
    with pytest.raises(ConfigError, match="oracle"):
        rule(signal=oracle)
    with pytest.raises(ConfigError, match="oracle"):
        RouteOptions(signal=oracle)
    forged = {**rule().to_dict(), "signal": oracle}
    with pytest.raises(FormatError, match="oracle"):
        RoutingRule.from_dict(forged)
    with pytest.raises(FormatError, match="oracle"):
        rule_from_manifest(forged, 2)


def test_manifest_round_trip_and_strictness():
    r = rule(signal="gain_probe", probe_weights=(0.5, -1.0, 0.25, 0.0, 1.0, 2.0), probe_bias=0.1,
             selection=(("gain_probe", 0.4), ("entropy", 0.3)), calib_tokens=4096, sign=1)
    d = r.to_dict()
    assert d["policy"] == "adaptive" and d["probe"]["weights"][1] == -1.0
    assert RoutingRule.from_dict(d) == r
    assert rule_from_manifest({"policy": "uniform", "passes": 2}, 2) is None
    with pytest.raises(FormatError, match="unknown members"):
        RoutingRule.from_dict({**d, "lookahead": 3})
    with pytest.raises(FormatError, match="n_passes"):
        rule_from_manifest(d, 3)
    no_cap = rule(cap_fraction=None).to_dict()
    assert "cap_fraction" not in no_cap and RoutingRule.from_dict(no_cap).cap_fraction is None
    with pytest.raises(ConfigError, match="cap_fraction"):
        rule(cap_fraction=0.2)                       # below the target
    with pytest.raises(ConfigError, match="probe_weights"):
        rule(signal="gain_probe_hidden")
    with pytest.raises(ConfigError, match="extra pass"):
        rule(extra_passes=2)


def greedy_bucket(c: torch.Tensor, cap: float) -> torch.Tensor:
    out = torch.zeros_like(c)
    for b in range(c.shape[0]):
        n = 0
        for t in range(c.shape[1]):
            if c[b, t] and n + 1 <= math.floor(cap * (t + 1) + 1e-9):
                out[b, t], n = True, n + 1
    return out


@pytest.mark.parametrize("cap", [0.1, 0.25, 0.3, 0.5, 1.0])
def test_token_bucket_is_the_causal_greedy_cap(cap):
    g = torch.Generator().manual_seed(int(cap * 100))
    for p in (0.1, 0.3, 0.9):
        cand = torch.rand(40, 50, generator=g) < p
        sel, refused = token_bucket(cand, cap)
        assert torch.equal(sel, greedy_bucket(cand, cap))
        assert not (sel & ~cand).any() and refused == int(cand.sum() - sel.sum())
        allow = torch.floor(cap * torch.arange(1, 51) + 1e-9)
        assert (sel.cumsum(1) <= allow).all()        # every prefix of every window stays under the cap
        # causality: decisions up to t do not change when later candidates change
        later = cand.clone()
        later[:, 25:] = ~later[:, 25:]
        assert torch.equal(token_bucket(later, cap)[0][:, :25], sel[:, :25])


def test_random_control_is_per_position_and_batch_independent():
    toks = torch.from_numpy(markov_tokens(4 * 32, 0).reshape(4, 32))
    u = random_uniform(toks, 7)
    assert u.min() >= 0 and u.max() < 1 and 0.35 < float(u.mean()) < 0.65
    assert torch.equal(random_uniform(toks[[2, 0]], 7), u[[2, 0]])
    changed = toks.clone()
    changed[1, 20] = (changed[1, 20] + 1) % 64
    v = random_uniform(changed, 7)
    assert torch.equal(v[1, :20], u[1, :20]) and not torch.equal(v[1, 20:22], u[1, 20:22])
    assert not torch.equal(random_uniform(toks, 8), u)


def test_every_legal_signal_scores_each_position_from_its_own_pass_k():
    torch.manual_seed(0)
    m = RecurrentLM(CFG).eval()
    x = torch.from_numpy(markov_tokens(3 * 32, 1).reshape(3, 32))
    a, b = split_halves(collect(m, markov_tokens(4097, 2), batch_size=32))
    parts = fit_parts(a, 0.25, 1.0)
    for s in LEGAL_SIGNALS:
        r, _ = rule_for(s, parts, b, 0.25, 0.3, CFG.n_passes)
        future = x.clone()
        future[:, 20:] = (future[:, 20:] + 3) % 64
        with torch.no_grad():
            full = score(r, features(pass_k(m, x, [s]), [s]))
            other = score(r, features(pass_k(m, future, [s]), [s]))
        assert full.shape == (3, 32) and torch.isfinite(full).all()
        assert torch.equal(other[:, :20], full[:, :20]), s    # no look-ahead: other futures, same scores
        assert not torch.equal(other[:, 21:], full[:, 21:]), s


def test_calibrated_fraction_holds_on_held_out_tokens_and_never_exceeds_cap():
    torch.manual_seed(0)
    m = RecurrentLM(CFG).eval()
    r = calibrate(m, markov_tokens(20_000, 3), RouteOptions(calib_tokens=16_384))
    assert r.signal in LEGAL_SIGNALS and r.cap_fraction == pytest.approx(0.3)
    names = [s for s, _ in r.selection]
    assert sorted(names) == sorted(LEGAL_SIGNALS) and names[0] == r.signal
    held = torch.from_numpy(markov_tokens(64 * 32, 4).reshape(64, 32))
    with torch.no_grad():
        sel, _ = r.decide(score(r, features(pass_k(m, held, [r.signal]), [r.signal])))
    frac = float(sel.float().mean())
    assert abs(frac - 0.25) <= 0.05 and frac <= r.cap_fraction
    assert (sel.sum(1) <= r.slots_per_window(32)).all()


def test_capture_efficiency_bounds():
    gain = np.array([5.0, 4.0, 0.0, -1.0, 1.0, 0.0, 0.5, 2.0])
    best = np.zeros(8, dtype=bool)
    best[[0, 1]] = True
    assert capture_efficiency(gain, best) == pytest.approx(1.0)
    worst = np.zeros(8, dtype=bool)
    worst[[3, 2]] = True
    assert capture_efficiency(gain, worst) < 0
    assert math.isnan(capture_efficiency(gain, np.zeros(8, dtype=bool)))
