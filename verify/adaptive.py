"""Adaptive inference: pass K for every position, a signal, a decision, and a sparse pass K+1.

Owns the policies a verify or an experiment runs (uniform-K, uniform-K+1, the artifact's embedded rule, or
any calibrated rule / fixed selection), the logits function that runs one (`PolicyRunner`: selected
positions get exactly the uniform K+1 output, the others exactly the uniform K output), its counters
(realized fraction, how often the cap bound), and the analytic FLOPs per token.

The path is as cheap as the signal allows: for signals read from hidden states, the head runs once, on
the merged states (pass-K states with the selected positions' pass-K+1 states written in); for signals
read from the K-exit distribution the head must run on every position first, and again on the selected
ones. The sparse pass computes keys/values for every position but queries, attention output and MLP for
the selected ones only (core/layers.py). Must not calibrate or train.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common.errors import UsageError
from core.config import ModelConfig
from core.routing import LEGAL_SIGNALS, RoutingRule, Signal, needs_logits, rule_from_manifest
from core.signals import features, pass_k, score

UNIFORM_K = "uniform-K"
UNIFORM_K1 = "uniform-K+1"
EMBEDDED = "embedded"


@dataclass
class RunStats:
    positions: int = 0
    selected: int = 0
    cap_bound: int = 0

    @property
    def fraction(self) -> float:
        return self.selected / self.positions if self.positions else 0.0


@dataclass(frozen=True)
class Policy:
    """What runs: `rule` None = uniform with `n_passes`; else K passes plus the rule's extra pass."""

    name: str
    n_passes: int
    rule: RoutingRule | None = None

    @property
    def adaptive(self) -> bool:
        return self.rule is not None


def resolve_policy(name: str, cfg: ModelConfig, routing: dict, rules: dict[str, RoutingRule] | None = None
                   ) -> Policy:
    """uniform-K | uniform-K+1 | embedded (the artifact's rule; uniform-K if it has none) | a key of `rules`."""
    K = cfg.n_passes
    if name == UNIFORM_K:
        return Policy(UNIFORM_K, K)
    if name == UNIFORM_K1:
        if cfg.extra_passes < 1:
            raise UsageError(f"--policy {UNIFORM_K1}: the model has no parameters for a pass beyond K={K}")
        return Policy(UNIFORM_K1, K + 1)
    if name == EMBEDDED:
        rule = rule_from_manifest(routing, K)
        return Policy(EMBEDDED if rule else UNIFORM_K, K, rule)
    if rules and name in rules:
        return Policy(name, K, rules[name])
    known = [UNIFORM_K, UNIFORM_K1, EMBEDDED] + sorted(rules or {})
    raise UsageError(f"--policy {name!r}: unknown; use one of {known}")


class PolicyRunner:
    """Runs a policy on batches of windows, counting what it selected.

    Called as x [B,T] -> logits [B,T,V] it is a core.scoring logits function (verify uses it so); `nll`
    returns per-position losses directly, reusing the K-exit log-softmax a logit signal already computed."""

    def __init__(self, model, policy: Policy) -> None:
        self.model, self.policy = model, policy
        self.stats = RunStats()

    def _count(self, x: torch.Tensor, selected: torch.Tensor | None, refused: int) -> None:
        self.stats.positions += x.numel()
        if selected is not None:
            self.stats.selected += int(selected.sum())
            self.stats.cap_bound += refused

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.policy.adaptive:
            self._count(x, None, 0)
            return self.model(x, self.policy.n_passes)
        logits, selected, refused = adaptive_logits(self.model, x, self.policy.rule)
        self._count(x, selected, refused)
        return logits

    @torch.no_grad()
    def nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-position cross-entropy [B,T] (nats) of targets y under the policy."""
        if not self.policy.adaptive:
            self._count(x, None, 0)
            return _ce(self.model(x, self.policy.n_passes), y)
        rule = self.policy.rule
        pk, selected, refused = decide(self.model, rule, x)
        self._count(x, selected, refused)
        return _sparse_nll(self.model, pk, selected, y)


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                           reduction="none").view(y.shape)


def _sparse_nll(model, pk, selected: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rows, pos = selected.nonzero(as_tuple=True)
    if pk.logits is None:
        h = pk.h_k
        if len(rows):
            B, T, D = h.shape
            h.view(B * T, D).index_copy_(0, rows * T + pos, model.extra_state_selected(h, rows, pos))
        return _ce(model.head(h), y)
    if pk.has_logp:                                      # the signal's log-softmax is the loss's too
        nll = F.nll_loss(pk.logp.reshape(-1, pk.logp.shape[-1]), y.reshape(-1), reduction="none").view(y.shape)
    else:
        nll = _ce(pk.logits, y)
    if len(rows):
        nll[rows, pos] = _ce(model.extra_pass_selected(pk.h_k, rows, pos), y[rows, pos])
    return nll


@torch.no_grad()
def decide(model, rule: RoutingRule, x: torch.Tensor):
    """(PassK, selected [B,T], refused): pass K and the rule's decision for a batch of windows."""
    pk = pass_k(model, x, [rule.signal])
    selected, refused = rule.decide(score(rule, features(pk, [rule.signal])))
    return pk, selected, refused


@torch.no_grad()
def adaptive_logits(model, x: torch.Tensor, rule: RoutingRule | None,
                    selected: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(logits [B,T,V], selected [B,T], refused by the cap) under `rule`, or for a fixed `selected` mask
    (the oracle rows of an experiment: then no signal runs). Selected positions carry the K+1 output."""
    refused = 0
    if selected is None:
        pk, selected, refused = decide(model, rule, x)
    else:
        pk = pass_k(model, x, [])
    rows, pos = selected.nonzero(as_tuple=True)
    if pk.logits is not None:                            # the head ran on every position for the signal
        logits = pk.logits
        if len(rows):
            logits[rows, pos] = model.extra_pass_selected(pk.h_k, rows, pos)
        return logits, selected, refused
    h = pk.h_k
    if len(rows):                                        # h_k is ours: the K/V it fed are already computed
        B, T, D = h.shape
        h.view(B * T, D).index_copy_(0, rows * T + pos, model.extra_state_selected(h, rows, pos))
    return model.head(h), selected, refused


@torch.no_grad()
def fixed_nll(model, x: torch.Tensor, y: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Per-position losses for a given selection (no signal runs): the oracle rows' timed path."""
    return _sparse_nll(model, pass_k(model, x, []), selected, y)


# --- analytic cost -------------------------------------------------------------------------------------------
def block_flops(cfg: ModelConfig, seq_len: int | None = None) -> dict[str, float]:
    """FLOPs per token of one block pass (multiply-add = 2): its parts, for a window of `seq_len`."""
    T = seq_len or cfg.seq_len
    D, E = cfg.d_model, cfg.head_dim
    HE, GE = cfg.n_heads * E, cfg.n_kv_heads * E
    kv = 2.0 * 2 * D * GE
    q_out = 2.0 * (D * HE + HE * D)
    mlp = 2.0 * 2 * D * cfg.mlp_hidden
    attn = 2.0 * 2 * HE * (T + 1) / 2                     # QK^T and AV over the causal keys, on average
    return {"kv": kv, "q_out": q_out, "mlp": mlp, "attn": attn, "total": kv + q_out + mlp + attn}


def decision_flops(cfg: ModelConfig, signal: str | None) -> float:
    """Per-token cost of computing the signal and the decision (compare + bucket)."""
    V, D = cfg.vocab_size, cfg.d_model
    cost = {Signal.ENTROPY: 4 * V, Signal.PROB_MARGIN: 2 * V, Signal.LOGIT_MARGIN: 2 * V,
            Signal.UPDATE_SIZE: 6 * D, Signal.COSINE: 6 * D, Signal.RESIDUAL_NORM: 2 * D,
            Signal.PROBE: 8 * V + 14 * D + 12, Signal.PROBE_HIDDEN: 14 * D + 2 * D + 2 * (D + 3),
            Signal.RANDOM: 30, Signal.HEURISTIC: 40}
    return float(cost.get(signal, 0)) + 4.0


def flops_per_token(cfg: ModelConfig, policy: Policy, fraction: float, seq_len: int | None = None) -> float:
    """Analytic FLOPs per token: block passes, the extra pass's K/V projection for every position and the
    rest for the selected `fraction`, the head (twice for selected positions of logit signals), the decision."""
    blk = block_flops(cfg, seq_len)
    head = 2.0 * cfg.d_model * cfg.vocab_size
    if not policy.adaptive:
        return policy.n_passes * blk["total"] + head
    signal = policy.rule.signal
    extra = blk["kv"] + fraction * (blk["total"] - blk["kv"])
    second_head = fraction * head if needs_logits(signal) else 0.0
    return cfg.n_passes * blk["total"] + extra + head + second_head + decision_flops(cfg, signal)


def fixed_mask_flops(cfg: ModelConfig, fraction: float, seq_len: int | None = None) -> float:
    """FLOPs per token of running a given selection (no signal; oracle rows)."""
    blk = block_flops(cfg, seq_len)
    return (cfg.n_passes * blk["total"] + blk["kv"] + fraction * (blk["total"] - blk["kv"])
            + 2.0 * cfg.d_model * cfg.vocab_size)


# --- verify's hooks -------------------------------------------------------------------------------------------
def runner_for_target(target, policy_name: str = EMBEDDED, train_tokens=None) -> PolicyRunner | None:
    """The policy runner for a verify target (verify.targets.EvalTarget); None for non-recurrent models,
    which run as they are (only embedded / uniform-K make sense for them). A signal name as the policy
    calibrates that signal on `train_tokens` (TRAINING tokens: the data folder's *_train_* shards) at the
    embedded rule's target fraction and cap (0.25 / 0.30 when the artifact has none)."""
    if target.family != "recurrent":
        if policy_name not in (EMBEDDED, UNIFORM_K):
            raise UsageError(f"--policy {policy_name}: {target.path} is a {target.family!r} model; routing "
                             f"policies apply to recurrent cores only")
        return None
    routing = target.info.get("routing") or {"policy": "uniform"}
    cfg = target.model.cfg
    if policy_name in LEGAL_SIGNALS:
        from core.route_calibrate import RouteOptions, calibrate

        if train_tokens is None:
            raise UsageError(f"--policy {policy_name} calibrates its threshold on training tokens: give --data a "
                             f"folder with *_train_*.bin shards beside the *_val_*.bin ones")
        embedded = rule_from_manifest(routing, cfg.n_passes)
        opts = (RouteOptions(signal=policy_name, fraction=embedded.target_fraction, cap=embedded.cap_fraction,
                             no_cap=embedded.cap_fraction is None) if embedded else RouteOptions(signal=policy_name))
        return PolicyRunner(target.model, Policy(policy_name, cfg.n_passes,
                                                 calibrate(target.model, train_tokens, opts)))
    return PolicyRunner(target.model, resolve_policy(policy_name, cfg, routing))


def same_policy(runner: PolicyRunner | None, ref_target) -> PolicyRunner | None:
    """The artifact's policy applied to a reference (its float checkpoint), when the architectures match."""
    if runner is None or ref_target.family != "recurrent" or ref_target.model.cfg != runner.model.cfg:
        return None
    return PolicyRunner(ref_target.model, runner.policy)


def routing_report(runner: PolicyRunner | None, seq_len: int) -> dict:
    """verify's routing keys: policy, signal, target/realized fraction, cap refusals, analytic FLOPs/token."""
    if runner is None:
        return {"policy": EMBEDDED, "route_signal": None, "route_fraction_target": None,
                "route_fraction_realized": None, "cap_bound_count": None, "flops_per_token": None}
    pol, st = runner.policy, runner.stats
    rule = pol.rule
    realized = st.fraction if pol.adaptive else (1.0 if pol.name == UNIFORM_K1 else 0.0)
    return {"policy": pol.name, "route_signal": rule.signal if rule else None,
            "route_fraction_target": rule.target_fraction if rule else None,
            "route_cap_fraction": rule.cap_fraction if rule else None,
            "route_fraction_realized": realized, "route_selected": st.selected, "route_positions": st.positions,
            "cap_bound_count": st.cap_bound,
            "flops_per_token": flops_per_token(runner.model.cfg, pol, realized, seq_len)}
