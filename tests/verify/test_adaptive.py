"""Adaptive inference: exactness of the sparse extra pass, legality of decisions, cost accounting, verify keys."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.errors import FormatError, UsageError
from core.config import ModelConfig
from core.model import RecurrentLM
from core.route_calibrate import collect, fit_parts, rule_for, split_halves
from core.routing import LEGAL_SIGNALS, RoutingRule
from quant.assemble import pack_tensors
from quant.options import PackOptions
from verify.adaptive import (
    UNIFORM_K,
    UNIFORM_K1,
    Policy,
    PolicyRunner,
    adaptive_logits,
    flops_per_token,
    resolve_policy,
)

CFG = ModelConfig(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, n_passes=2, seq_len=32)
B, T = 6, 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def stream(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    toks = (np.cumsum(rng.integers(1, 4, n)) % 60 + 4).astype(np.int64)
    toks[::150] = 1
    return toks


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = RecurrentLM(CFG).eval()
    with torch.no_grad():                    # make pass K+1 differ visibly from pass K
        m.pass_emb[CFG.n_passes].normal_(0, 0.5)
    return m


@pytest.fixture(scope="module")
def rules(model):
    """A calibrated rule per legal signal (target 0.25, cap 0.3), on tokens other than the test batches."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = split_halves(collect(model, stream(4097, 1)))
    parts = fit_parts(a, 0.25, 1.0)
    out = {s: rule_for(s, parts, b, 0.25, 0.3, CFG.n_passes)[0] for s in LEGAL_SIGNALS}
    torch.set_num_threads(n)
    return out


def batch(seed: int = 5):
    toks = torch.from_numpy(stream(B * T + 1, seed))
    return toks[:-1].view(B, T), toks[1:].view(B, T)


@pytest.mark.parametrize("signal", LEGAL_SIGNALS)
def test_selected_positions_equal_uniform_k1_and_the_others_uniform_k(model, rules, signal):
    x, y = batch()
    with torch.no_grad():
        dense_k, dense_k1 = model(x), model(x, CFG.n_passes + 1)
    logits, sel, _ = adaptive_logits(model, x, rules[signal])
    assert 0 < int(sel.sum()) < sel.numel()
    assert (logits[sel] - dense_k1[sel]).abs().max().item() < 1e-5
    assert torch.equal(logits[~sel], dense_k[~sel])
    assert (dense_k1[sel] - dense_k[sel]).abs().max().item() > 1e-2     # the comparison is not vacuous
    runner = PolicyRunner(model, Policy(signal, CFG.n_passes, rules[signal]))
    nll = runner.nll(x, y)
    want = F.cross_entropy(logits.reshape(-1, 64), y.reshape(-1), reduction="none").view(B, T)
    assert (nll - want).abs().max().item() < 1e-5
    assert runner.stats.selected == int(sel.sum()) and runner.stats.positions == B * T


def run(model, rule, x, y):
    runner = PolicyRunner(model, Policy("r", CFG.n_passes, rule))
    nll = runner.nll(x, y)
    _, sel, _ = adaptive_logits(model, x, rule)
    return sel, nll


@pytest.mark.parametrize("signal", LEGAL_SIGNALS)
def test_future_tokens_and_targets_never_change_earlier_decisions_or_losses(model, rules, signal):
    x, y = batch()
    sel, nll = run(model, rules[signal], x, y)
    for p in (5, 17, 30):
        x2 = x.clone()
        x2[:, p] = (x2[:, p] + 7) % 64                      # a different future token at p (input p = target p-1)
        y2 = y.clone()
        y2[:, p - 1] = x2[:, p]
        sel2, nll2 = run(model, rules[signal], x2, y2)
        assert torch.equal(sel2[:, :p], sel[:, :p]) and torch.equal(nll2[:, :p - 1], nll[:, :p - 1])
        y3 = y.clone()
        y3[:, p] = (y3[:, p] + 11) % 64                     # only a target changes: no decision may move
        sel3, nll3 = run(model, rules[signal], x, y3)
        assert torch.equal(sel3, sel)
        keep = torch.ones(T, dtype=torch.bool)
        keep[p] = False
        assert torch.equal(nll3[:, keep], nll[:, keep])


@pytest.mark.parametrize("signal", LEGAL_SIGNALS)
def test_permuting_or_rebatching_sequences_changes_nothing(model, rules, signal):
    x, y = batch()
    sel, nll = run(model, rules[signal], x, y)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    sel_p, nll_p = run(model, rules[signal], x[perm], y[perm])
    assert torch.equal(sel_p, sel[perm]) and torch.equal(nll_p, nll[perm])
    for i in range(B):
        sel_i, nll_i = run(model, rules[signal], x[i:i + 1], y[i:i + 1])
        assert torch.equal(sel_i[0], sel[i]) and torch.equal(nll_i[0], nll[i])
    big_x, big_y = torch.cat([x, batch(9)[0]]), torch.cat([y, batch(9)[1]])
    sel_b, nll_b = run(model, rules[signal], big_x, big_y)
    assert torch.equal(sel_b[:B], sel) and torch.equal(nll_b[:B], nll)


def test_cap_bounds_every_window(model, rules):
    loose = RoutingRule(**{**rules["entropy"].__dict__, "threshold": -1e9})   # every position a candidate
    x, _ = batch()
    _, sel, refused = adaptive_logits(model, x, loose)
    assert int(sel.sum(1).max()) <= loose.slots_per_window(T) and refused == B * T - int(sel.sum())


def test_flops_of_adaptive_lie_between_uniform_depths_and_grow_with_fraction(rules):
    k = flops_per_token(CFG, Policy(UNIFORM_K, 2), 0.0)
    k1 = flops_per_token(CFG, Policy(UNIFORM_K1, 3), 1.0)
    hidden = Policy("h", 2, rules["update_size"])
    logit = Policy("l", 2, rules["entropy"])
    assert k < flops_per_token(CFG, hidden, 0.25) < flops_per_token(CFG, hidden, 0.5) < k1
    assert flops_per_token(CFG, hidden, 0.25) < flops_per_token(CFG, logit, 0.25)   # the second head
    assert flops_per_token(CFG, hidden, 0.0) > k                                     # K/V + decision


def test_resolve_policy_names(rules):
    assert resolve_policy("uniform-K", CFG, {"policy": "uniform"}).n_passes == 2
    assert resolve_policy("uniform-K+1", CFG, {"policy": "uniform"}).n_passes == 3
    assert resolve_policy("embedded", CFG, {"policy": "uniform", "passes": 2}).rule is None
    assert resolve_policy("embedded", CFG, rules["entropy"].to_dict()).rule == rules["entropy"]
    with pytest.raises(UsageError, match="unknown"):
        resolve_policy("deepest", CFG, {"policy": "uniform"})
    with pytest.raises(FormatError, match="oracle"):
        resolve_policy("embedded", CFG, {**rules["entropy"].to_dict(), "signal": "oracle_gain"})


def test_verify_reports_the_embedded_rule(tmp_path, model, rules, small_tokenizer):
    from core.shards import encode_documents, write_split
    from verify.job import VerifyRequest, verify_job

    cfg = ModelConfig(**{**CFG.to_dict(), "vocab_size": small_tokenizer.vocab_size})
    torch.manual_seed(1)
    m = RecurrentLM(cfg).eval()
    tensors = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    rule = RoutingRule(signal="random", threshold=0.75, target_fraction=0.25, cap_fraction=0.3, passes=2)
    body = {"model": {"family": "recurrent", "config": cfg.to_dict()}, "routing": rule.to_dict(),
            "tokenizer": {"sha256": small_tokenizer.sha256, "vocab_size": cfg.vocab_size}}
    art = tmp_path / "m.gpk"
    art.write_bytes(pack_tensors(tensors, body, PackOptions()).data)
    from core.corpus import Document

    docs = [Document(f"d{i}", f"def f(x):\n    return x + {i}\n" * 4) for i in range(30)]
    write_split(encode_documents(docs, small_tokenizer), tmp_path, "t", "val")
    rep = verify_job(VerifyRequest(art, (tmp_path,), small_tokenizer.path, progress=False))
    json.dumps(rep, default=str)
    assert rep["policy"] == "embedded" and rep["route_signal"] == "random"
    assert rep["route_fraction_target"] == 0.25 and 0.1 < rep["route_fraction_realized"] <= 0.3
    for key in ("cap_bound_count", "flops_per_token", "tokens_per_second"):
        assert rep[key] is not None
    uni = verify_job(VerifyRequest(art, (tmp_path,), small_tokenizer.path, progress=False, policy="uniform-K"))
    deep = verify_job(VerifyRequest(art, (tmp_path,), small_tokenizer.path, progress=False, policy="uniform-K+1"))
    assert uni["flops_per_token"] < rep["flops_per_token"] < deep["flops_per_token"]
    lo, hi = sorted((uni["val_loss"], deep["val_loss"]))
    assert lo - 0.05 < rep["val_loss"] < hi + 0.05
    with pytest.raises(UsageError, match="training tokens"):
        verify_job(VerifyRequest(art, (tmp_path,), small_tokenizer.path, progress=False, policy="update_size"))
    write_split(encode_documents(docs * 4, small_tokenizer), tmp_path, "t", "train")
    sig = verify_job(VerifyRequest(art, (tmp_path,), small_tokenizer.path, progress=False, policy="update_size"))
    assert sig["policy"] == "update_size" and sig["route_signal"] == "update_size"
    assert sig["route_fraction_target"] == 0.25 and sig["route_fraction_realized"] <= 0.3
