"""The planner: exact solver, never over the budget, within 0.5% of it when forced, plans that round-trip."""

import itertools
import json

import numpy as np
import pytest

from common.errors import BudgetError
from packer.reader import read_artifact
from quant import formats
from quant.calibrate import calibration_windows
from quant.candidates import Candidate
from quant.candidates import frontier as pareto
from quant.options import PackOptions
from quant.pipeline import Packer
from quant.planner import Option, PlannerConfig, isotonic, read_plan, restrict, solve, uniform_seeds

FAST = ()   # codecs beyond zstd: the planner's logic does not depend on them, and ANS is slow on tiny tensors
MENU = ("int8_row", "int6_row", "int5_row", "int4_row", "int4_g64", "int3_row", "int3_g64", "fp16")


def fake(name, nbytes, err, dloss, fmt="fp16"):
    enc = formats.Encoded(fmt, {})
    return Option(Candidate(name, fmt, None, enc, nbytes, err, True), dloss)


def test_solve_is_exact_and_within_budget():
    rng = np.random.default_rng(0)
    for trial in range(20):
        opts = {f"t{i}": [fake(f"t{i}", int(b), -float(b), float(d)) for b, d in
                          zip(rng.integers(10, 400, 4), rng.random(4))] for i in range(4)}
        budget = int(rng.integers(200, 1200))
        best = None
        for combo in itertools.product(*(opts[n] for n in sorted(opts))):
            if sum(o.cand.bytes for o in combo) <= budget:
                loss = sum(o.dloss for o in combo)
                best = loss if best is None else min(best, loss)
        if best is None:
            with pytest.raises(BudgetError):
                solve(opts, budget)
            continue
        got = solve(opts, budget)
        assert sum(o.cand.bytes for o in got.values()) <= budget
        assert sum(o.dloss for o in got.values()) == pytest.approx(best)


def test_pareto_and_isotonic():
    cands = [fake("t", b, e, 0).cand for b, e in ((100, 5.0), (120, 6.0), (150, 2.0), (90, 9.0), (150, 1.0))]
    assert [(c.bytes, c.error) for c in pareto(cands)] == [(90, 9.0), (100, 5.0), (150, 1.0)]
    assert isotonic([0.1, 0.3, 0.2, 0.5]) == pytest.approx([0.1, 0.25, 0.25, 0.5])


@pytest.fixture(scope="module")
def setup(tiny, tiny_dir):
    import torch

    threads = torch.get_num_threads()       # module scope runs before the per-test one-thread fixture
    torch.set_num_threads(1)
    model = tiny.model()
    win = calibration_windows(tiny_dir, 2048, tiny.cfg.seq_len, tiny.cfg.vocab_size)
    tensors = tiny.tensors(model)
    session = Packer(model, tensors, tiny.body(), PackOptions(budget_bytes=10**9, extra_codecs=FAST), windows=win,
                     progress=False)

    def run(budget, fill=True, plan=None):
        if plan is not None:
            return session.result(plan=plan, budget_bytes=budget)
        if fill:
            return session.plan_to_budget(PlannerConfig(menu=MENU), budget)
        return session.result(planner=PlannerConfig(menu=MENU), budget_bytes=budget)

    full = run(10**9)                                  # everything it can store at its best
    low = session.plan_to_budget(PlannerConfig(menu=("int3_row",)), 10**9)
    high = session.plan_to_budget(PlannerConfig(menu=("int8_row",)), 10**9)
    torch.set_num_threads(threads)
    return run, full, low, high


def test_planner_never_exceeds_and_fills_a_forcing_budget(setup):
    run, full, low, high = setup
    assert full.report["mode"] == "planner"
    for frac in (0.2, 0.5, 0.8):          # between int3 and int8 everywhere: mixed precision is forced
        budget = int(low.total_bytes + frac * (high.total_bytes - low.total_bytes))
        res = run(budget)
        assert res.total_bytes <= budget
        assert res.total_bytes >= 0.995 * budget, (frac, res.total_bytes, budget)
        assert len({f for n, f in res.plan.items() if "blocks" in n and n.endswith("weight")}) >= 1
        read_artifact(res.data)
    with pytest.raises(BudgetError):
        run(low.total_bytes // 2)


def test_default_plan_that_does_not_fit_goes_to_the_planner(setup):
    run = setup[0]
    default = run(10**9, fill=False)
    assert default.report["mode"] == "default"
    budget = int(0.9 * default.total_bytes)
    res = run(budget, fill=False)
    assert res.report["mode"] == "planner" and res.total_bytes <= budget


def test_plan_document_round_trips(setup, tmp_path):
    run, full, low, _ = setup
    res = run(int(0.5 * (low.total_bytes + full.total_bytes)))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(res.report["plan"]))
    plan = read_plan(path)
    assert {n: f for n, (f, _) in plan.items()} == {n: f for n, f in res.plan.items() if n not in res.aliases}
    again = run(res.budget_bytes, plan=plan)
    assert again.plan == res.plan and again.scales == res.scales
    assert again.report["mode"] == "plan"


def test_uniform_seeds_fit_and_restrict_keeps_only_upgrades():
    opts = {n: [fake(n, b, e, d, f) for f, b, e, d in (("int3_row", 30, 9.0, 0.9), ("int3_g64", 34, 7.0, 0.7),
                                                         ("int4_row", 40, 4.0, 0.4), ("int8_row", 80, 1.0, 0.1))]
            for n in ("tok_emb.weight", "blocks.0.fc.weight")}
    seeds = uniform_seeds(opts, lambda n: n.startswith("tok_emb"), 10**6)
    assert set(seeds) == {"int3/emb3", "int3/emb8", "int4/emb4", "int4/emb8", "int8/emb8"}
    s = seeds["int3/emb8"]
    assert (s["tok_emb.weight"].cand.format, s["blocks.0.fc.weight"].cand.format) == ("int8_row", "int3_row")
    assert set(uniform_seeds(opts, lambda n: n.startswith("tok_emb"), 70)) == {"int3/emb3"}   # emb8 needs 110
    up = restrict(opts, seeds["int4/emb4"])
    assert [o.cand.format for o in up["blocks.0.fc.weight"]] == ["int4_row", "int8_row"]


def test_planner_keeps_the_start_with_the_least_joint_loss(setup):
    run, _, low, high = setup
    res = run(int(low.total_bytes + 0.3 * (high.total_bytes - low.total_bytes)))
    joint = res.report["joint"]
    assert joint[0]["start"] == "additive" and len(joint) >= 2
    assert all(j["payload_bytes"] <= res.budget_bytes for j in joint)
    best = min(joint, key=lambda j: j["measured_dloss_nats"])
    assert res.report["start"] == best["start"] == res.report["plan"]["start"]
    assert np.isfinite(res.report["measured_dloss_nats"])


def test_joint_check_runs_on_its_own_larger_window_set(setup, tiny, tiny_dir):
    """With joint windows given, whole plans are scored there (sensitivities stay on the small set): the
    reported joint loss is the artifact's loss on exactly those windows, and the report says how many."""
    from quant.calibrate import LossEvaluator

    _, _, low, high = setup
    model, tensors = tiny.model(), tiny.tensors(tiny.model())
    small = calibration_windows(tiny_dir, 2048, tiny.cfg.seq_len, tiny.cfg.vocab_size)
    big = calibration_windows(tiny_dir, 8192, tiny.cfg.seq_len, tiny.cfg.vocab_size)
    session = Packer(model, tensors, tiny.body(), PackOptions(budget_bytes=10**9, extra_codecs=FAST),
                     windows=small, joint_windows=big, progress=False)
    res = session.plan_to_budget(PlannerConfig(menu=MENU), int(low.total_bytes + 0.3 * (high.total_bytes
                                                                                         - low.total_bytes)))
    assert res.report["calibration"]["joint_tokens"] == big.shape[0] * (big.shape[1] - 1) > small.size
    decoded = {n: formats.decode(e.format, e.arrays, tensors[n].shape) for n, e in res.encoded.items()}
    decoded.update({a: decoded[t] for a, t in res.aliases.items()})
    on = {name: LossEvaluator(tiny.model(), w) for name, w in (("big", big), ("small", small))}
    measured = {k: ev.loss_with({n: v for n, v in decoded.items() if n in ev.params}) - ev.base
                for k, ev in on.items()}
    assert res.report["measured_dloss_nats"] == pytest.approx(measured["big"], abs=1e-9)
    assert abs(measured["big"] - measured["small"]) > 1e-6      # the two sets really differ


def test_restrict_does_not_call_a_coarser_format_an_upgrade():
    """A ternary option whose measured loss is noise (lower dloss than the int8 seed) has far more error:
    it is not an upgrade of int8, so a start at int8 cannot slide down to it."""
    opts = {"w": [fake("w", 10, 20.0, 0.0, "ternary_row"), fake("w", 40, 0.5, 1e-4, "int6_row"),
                  fake("w", 80, 0.01, 2e-4, "int8_row"), fake("w", 160, 0.0, 1e-4, "fp16")]}
    up = restrict(opts, {"w": opts["w"][2]})
    assert [o.cand.format for o in up["w"]] == ["int8_row", "fp16"]


def test_hessian_mode_never_predicts_a_coarse_format_free():
    """Both regular probes measure noise; the coarsest option really costs 0.004 nats. The fallback probe
    measures it, so its predicted loss is what it costs, not alpha ~ 0 fitted to the noise."""
    from quant.planner import sensitivities

    errors = [20.0, 3.0, 1.0, 0.5, 0.01]
    opts = {"w": [fake("w", 10 * (i + 1), e, 0.0, "int4_row") for i, e in enumerate(errors)]}
    measured = []

    def loss_of(name, cand):
        measured.append(cand.error)
        return 0.004 if cand.error == 20.0 else 1e-5

    assert sensitivities(opts, loss_of, "hessian", 0, progress=False, noise_nats=2e-4) == "hessian"
    assert 20.0 in measured and len(measured) == 3
    d = {o.cand.error: o.dloss for o in opts["w"]}
    assert d[20.0] == pytest.approx(0.004) and d[3.0] == pytest.approx(0.004 * 3 / 20)
    # nothing significant anywhere: the slope is bounded by floor / the largest probed error, not zero
    opts = {"w": [fake("w", 10 * (i + 1), e, 0.0, "int4_row") for i, e in enumerate(errors)]}
    sensitivities(opts, lambda n, c: 1e-5, "hessian", 0, progress=False, noise_nats=2e-4)
    assert {o.cand.error: o.dloss for o in opts["w"]}[20.0] == pytest.approx(2e-4)


def test_auto_sensitivity_measures_only_when_the_time_fits():
    from common.errors import ConfigError
    from quant.planner import sensitivities

    def fresh():
        return {"w": [fake("w", 10 * (i + 1), e, 0.0, "int4_row") for i, e in enumerate((9.0, 3.0, 1.0, 0.1))]}

    def run(**kw):
        calls = []
        mode = sensitivities(fresh(), lambda n, c: calls.append(c) or 1e-3 * c.error, "auto", 300,
                             progress=False, **kw)
        return mode, len(calls)

    assert run() == ("measured", 4)
    assert run(eval_seconds=2.0, max_seconds=8.0) == ("measured", 4)          # 4 options x 2 s fit 8 s
    assert run(eval_seconds=2.0, max_seconds=7.9) == ("hessian", 2)           # they do not: two probes
    with pytest.raises(ConfigError, match="--calib-seconds -1.0"):
        PlannerConfig(max_measured_seconds=-1.0)
