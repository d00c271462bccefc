"""From a model and its tensors to a packed artifact: calibrate, plan, encode, and confirm by packing.

Three ways to a plan: an explicit one (`plan`: name -> (format, scale method or None)); the default plan
(quant.pack.default_plan) with the best scale method per tensor; or the budget planner (quant/planner.py)
when `fill` is set, or when the default plan does not fit the budget (said on stderr). Among the additive
solve and the solves from uniform starts the planner keeps the plan with the least measured joint
calibration loss, and confirms it by real packs: the first solve gets the budget minus the measured
manifest/header/code overhead; if a pack comes out over, the payload target drops below that plan's payload
by the excess and it solves again; a pack never exceeds the budget (pack_tensors refuses). Calibration
windows must come from training shards (quant/calibrate.py): `windows` give the Hessians and the per-tensor
sensitivities (hundreds of evaluations), `joint_windows` (more tokens; default the same) the joint loss of
whole plans, which decides between plans whose predicted losses differ by less than the small set resolves.
`route` (quant/route_step.py: the routing rule's calibrator, artifact bytes -> manifest `routing`) is
called on each confirming pack, which is then packed again with that `routing` and the same encodings.
`device` (pack --device): the loss measurements (sensitivities, output-gradient slopes, joint checks) run
there; the Hessians, GPTQ, candidate encodings and the routing rule's calibration always run on the CPU, so a
default plan's bytes do not depend on the device. A planned pack's choices follow measured losses, which a
GPU computes in a different summation order: two options whose measured losses tie within float32 rounding
may be chosen differently (bench/gpu_check.sh compares CPU and GPU packs byte for byte).
Must not read or write files (quant/pack_job.py does).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from common.errors import BudgetError, UsageError
from common.progress import Progress
from common.stages import Stages
from packer.code_bytes import CodeCount, count_code
from quant import formats
from quant.assemble import PackResult, pack_tensors
from quant.calibrate import Hessian, LossEvaluator, collect_hessians, default_head_inputs
from quant.candidates import Candidate, best_candidate, tensor_options
from quant.options import PackOptions, default_plan, is_control, is_embedding
from quant.planner import (
    Option,
    PlannerConfig,
    plan_document,
    restrict,
    sensitivities,
    solve,
    uniform_seeds,
)
from quant.slopes import output_gradient_slopes
from quant.tying import alias_groups, find_duplicates
from quant.workers import map_tasks

Route = Callable[[bytes], dict]
MAX_CONFIRM_ROUNDS = 6
JOINT_ALL_PARAMS = 2_000_000     # models up to this size have every uniform start checked jointly
MAX_JOINT_STARTS = 3             # larger ones: the additive solve and this many starts, best predicted first


def log(msg: str, enabled: bool) -> None:
    if enabled:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


def calibrate(model: nn.Module, windows: np.ndarray, aliases: dict[str, str], batch_size: int = 16,
              progress: bool = True) -> dict[str, Hessian]:
    """Input Hessians per weight; a stored tensor's Hessian sums those of all names that alias it."""
    hess = collect_hessians(model, windows, batch_size, progress=progress)
    for target, members in alias_groups(aliases).items():
        hs = [hess[n] for n in (target, *members) if n in hess]
        if hs and all(h.matrix.shape == hs[0].matrix.shape for h in hs):
            hess[target] = Hessian(sum(h.matrix for h in hs), sum(h.rows for h in hs))
    return hess


class Packer:
    """One model's packing session: tensors, aliases, Hessians, evaluator, and the pack-and-check step."""

    def __init__(self, model: nn.Module | None, tensors: dict[str, np.ndarray], body: dict, opts: PackOptions, *,
                 windows: np.ndarray | None = None, joint_windows: np.ndarray | None = None,
                 route: Route | None = None, code: CodeCount | None = None, progress: bool = True,
                 batch_size: int = 16, stages: Stages | None = None, workers: int | None = None,
                 device: torch.device | None = None) -> None:
        self.tensors, self.body, self.opts, self.progress = tensors, body, opts, progress
        self.workers = workers                          # None: one per core (quant/workers.py)
        self.stages = stages or Stages()
        self.route = route
        self.code = code or count_code()
        self.aliases = find_duplicates(tensors, is_embedding) if opts.dedup else {}
        self.stored = [n for n in sorted(tensors) if n not in self.aliases]
        self.shapes = {n: tuple(v.shape) for n, v in tensors.items()}
        self.hessians: dict[str, Hessian] = {}
        self.evaluator = None
        self._joint: LossEvaluator | None = None
        self._joint_windows = joint_windows if windows is not None else None
        self._model, self._batch_size = model, batch_size
        self.head_names: set[str] = set()
        self.report: dict = {"calibration": None}
        self._measured: dict = {}
        if windows is not None and model is not None:
            t0 = time.perf_counter()
            with self.stages.stage("calibration forwards (Hessians)"):
                self.hessians = calibrate(model, windows, self.aliases, batch_size, progress)
            if device is not None and device.type != "cpu":     # loss measurements there (module docstring)
                model.to(device)
            with self.stages.stage("calibration forwards (base loss)"):
                self.evaluator = LossEvaluator(model, windows, batch_size)
            self.head_names = set(default_head_inputs(model))
            self.report["calibration"] = {"windows": int(windows.shape[0]), "tokens": _targets(windows),
                                          "joint_tokens": _targets(self._joint_windows),
                                          "seconds": round(time.perf_counter() - t0, 3),
                                          "base_loss_nats": self.evaluator.base}

    # --- measuring -----------------------------------------------------------------------------------------
    def loss_delta(self, name: str, cand: Candidate) -> float:
        """Calibration loss change with `name` (and every alias of it) replaced by the candidate (the
        sensitivity windows)."""
        return self._delta(self.evaluator, {name: cand})

    @property
    def joint_evaluator(self) -> LossEvaluator:
        """The evaluator of whole plans: on the joint windows when given (built on first use), else the same."""
        if self._joint_windows is None:
            return self.evaluator
        if self._joint is None:
            self._joint = LossEvaluator(self._model, self._joint_windows, self._batch_size)
        return self._joint

    def joint_delta(self, cands: dict[str, Candidate]) -> float:
        """Loss change on the joint windows with every given tensor (and its aliases) replaced."""
        return self._delta(self.joint_evaluator, cands)

    # --- packing -------------------------------------------------------------------------------------------
    def pack(self, cands: dict[str, Candidate], report: dict, with_route: bool = True,
             opts: PackOptions | None = None) -> PackResult:
        """Pack these encodings (never raising over budget: callers compare total_bytes themselves)."""
        opts = opts or self.opts

        def once(body: dict) -> PackResult:
            return pack_tensors(self.tensors, body, opts, {n: c.format for n, c in cands.items()},
                                self.code, encoded={n: c.enc for n, c in cands.items()}, aliases=self.aliases,
                                check_budget=False)
        with self.stages.stage("final encode"):
            res = once(self.body)
        if self.route is not None and with_route:
            with self.stages.stage("routing calibration"):
                routing = self.route(res.data)
            with self.stages.stage("final encode"):
                res = once(dict(self.body, routing=routing))
        return replace(res, report={**self.report, **report, "stages": self.stages.report()})

    def encode_plan(self, plan: dict[str, tuple[str, str | None]]) -> dict[str, Candidate]:
        """Best (or the named) scale method for each stored tensor's format; a tied embedding whose Hessian
        sees only the head use keeps GPTQ only if it measures better than the best data-free method."""
        heads = [n for n in self.stored if n in self.head_names and self.evaluator is not None and plan[n][1] is None]
        tasks = [(n, self.tensors[n], plan[n][0], self.hessians.get(n), self.opts, True, plan[n][1])
                 for n in self.stored] + [(n, self.tensors[n], plan[n][0], None, self.opts) for n in heads]
        bar = Progress("encode", len(tasks), enabled=self.progress)
        found = map_tasks(best_candidate, tasks, self.workers, bar.update, cost=_tensor_size)
        out = dict(zip(self.stored, found))
        for n, alt in zip(heads, found[len(self.stored):]):   # a tied head keeps GPTQ only if it measures better
            if out[n].method == "gptq" and self.loss_delta(n, alt) < self.loss_delta(n, out[n]):
                out[n] = alt
        return out

    def fixed(self, plan: dict[str, tuple[str, str | None]], mode: str, opts: PackOptions | None = None
              ) -> PackResult:
        """The artifact of an explicit plan (every stored tensor named), whatever its size."""
        opts = opts or self.opts
        with self.stages.stage("encode plan (GPTQ, scale search)"):
            cands = self.encode_plan(plan)
        doc = plan_document([(n, c, None) for n, c in cands.items()], self.aliases, opts.budget_bytes, {})
        return self.pack(cands, {"mode": mode, "plan": doc}, opts=opts)

    # --- the planner ---------------------------------------------------------------------------------------
    def options(self, cfg: PlannerConfig) -> dict[str, list[Option]]:
        """Every stored tensor's options: control tensors their control format, the others the frontier of the
        menu (quant.candidates.candidate_set), computed per tensor in worker processes."""
        bar = Progress("planner: encoding candidates", len(self.stored), enabled=self.progress)
        tasks = []
        for n in self.stored:
            h = self.hessians.get(n)
            menu = ((self.opts.control_format,) if is_control(n, self.shapes[n]) else
                    tuple(f for f in cfg.menu if _method_applies(f, self.opts, h is not None)))
            tasks.append((n, self.tensors[n], h, menu, self.opts, n in self.head_names,
                          is_control(n, self.shapes[n])))
        found = map_tasks(tensor_options, tasks, self.workers, bar.update, cost=_tensor_size)
        return {n: [Option(c) for c in cands] for n, cands in zip(self.stored, found)}

    def measured_options(self, cfg: PlannerConfig) -> tuple[dict[str, list[Option]], dict]:
        """Options with their sensitivities, computed once per planner config (budgets can share them)."""
        if cfg not in self._measured:
            t0 = time.perf_counter()
            with self.stages.stage("candidate encoding (GPTQ, scale search, bytes)"):
                options = self.options(cfg)
            evals0 = self.evaluator.evals
            per_eval = self.evaluator.seconds / max(self.evaluator.evals, 1)
            def slopes() -> dict[str, float]:
                with self.stages.stage("sensitivities: output-gradient slopes"):
                    return output_gradient_slopes(self._model, self.evaluator.windows, self._batch_size,
                                                  self.progress)
            with self.stages.stage("sensitivities"):
                mode = sensitivities(options, self.loss_delta, cfg.sensitivity, cfg.max_measured_evals,
                                     self.progress, cfg.noise_nats, per_eval, cfg.max_measured_seconds,
                                     slopes, lambda cands: self._delta(self.evaluator, cands))
            self._measured[cfg] = options, {"mode": "planner", "sensitivity": mode,
                                            "evals": self.evaluator.evals - evals0,
                                            "seconds_per_eval": round(per_eval, 4),
                                            "options": sum(len(o) for o in options.values()),
                                            "options_seconds": round(time.perf_counter() - t0, 3)}
        return self._measured[cfg]

    def _delta(self, evaluator: LossEvaluator, cands: dict[str, Candidate]) -> float:
        """Calibration loss change with every given tensor (and its aliases) replaced by its candidate."""
        repl = {}
        for name, cand in cands.items():
            w_hat = formats.decode(cand.format, cand.enc.arrays, self.shapes[name])
            for n in [name] + [a for a, t in self.aliases.items() if t == name]:
                if n in evaluator.params:
                    repl[n] = w_hat
        return evaluator.loss_with(repl) - evaluator.base if repl else 0.0

    def plan_to_budget(self, cfg: PlannerConfig, budget_bytes: int | None = None) -> PackResult:
        """The planner's artifact for budget_bytes (default opts.budget_bytes), confirmed by packing.

        The additive solve and the solves from each fitting uniform seed (quant.planner.uniform_seeds) are
        scored by their measured joint calibration loss; the best is confirmed by packing."""
        if self.evaluator is None:
            raise UsageError("the budget planner needs calibration tokens to measure sensitivities: pass "
                             "--calib-data DIR (a folder with *_train_*.bin shards of the model's tokenizer)")
        opts = self.opts if budget_bytes is None else replace(self.opts, budget_bytes=budget_bytes)
        budget = opts.budget_bytes
        t0 = time.perf_counter()
        options, facts = self.measured_options(cfg)
        cheapest = {n: min(o, key=lambda o: (o.cand.bytes, o.cand.error)) for n, o in options.items()}
        trial = self.pack({n: o.cand for n, o in cheapest.items()}, {}, with_route=False, opts=opts)
        overhead = trial.total_bytes - sum(o.cand.bytes for o in cheapest.values())
        if trial.total_bytes > budget:
            raise BudgetError(f"even the smallest plan ({trial.total_bytes} B with code, {overhead} B of it "
                              f"manifest, headers and code) exceeds the budget {budget} B; raise --budget-bytes")
        target = budget - overhead
        starts = {"additive": options, **self._best_starts(cfg, options, target)}
        joint = []
        with self.stages.stage("planning (solves and joint checks)"):
            for label, opt_set in starts.items():
                choice = solve(opt_set, target)
                joint.append({"start": label, "payload_bytes": sum(o.cand.bytes for o in choice.values()),
                              "predicted_dloss_nats": sum(o.dloss for o in choice.values()),
                              "measured_dloss_nats": self.joint_delta({n: o.cand for n, o in choice.items()})})
        win = min(joint, key=lambda j: (j["measured_dloss_nats"], j["start"] != "additive"))
        facts = {**facts, "start": win["start"], "joint": joint}
        best = self._confirm(starts[win["start"]], target, budget, opts, facts)
        if best is None and win["start"] != "additive":
            best = self._confirm(options, target, budget, opts, {**facts, "start": "additive"})
        if best is None:
            raise BudgetError(f"no plan fit the budget {budget} B after {MAX_CONFIRM_ROUNDS} confirming packs")
        predicted, res, cands = best
        res.report["measured_dloss_nats"] = self.joint_delta(cands)
        res.report["seconds"] = round(time.perf_counter() - t0, 3)
        log(f"planner: {res.total_bytes:,} B of {budget:,} B ({100 * res.total_bytes / budget:.2f}%), start "
            f"{win['start']} (best of {len(joint)} by joint calibration loss), loss increase predicted "
            f"{predicted:.5f} / measured {res.report['measured_dloss_nats']:.5f} nats/token, "
            f"{facts['evals']} evaluations ({facts['sensitivity']})", self.progress)
        return res

    def _best_starts(self, cfg: PlannerConfig, options: dict[str, list[Option]], target: int) -> dict:
        """The uniform starts whose joint loss is measured: all of them for models up to JOINT_ALL_PARAMS
        parameters, else the cfg.max_joint_starts (default MAX_JOINT_STARTS) best by predicted loss increase
        (a joint check costs one forward over the joint set; at 36M parameters a dozen of them took minutes)."""
        seeds = {k: restrict(options, seed) for k, seed in uniform_seeds(options, is_embedding, target).items()}
        k = cfg.max_joint_starts
        if k is None:
            k = len(seeds) if sum(v.size for v in self.tensors.values()) <= JOINT_ALL_PARAMS else MAX_JOINT_STARTS
        if len(seeds) <= k:
            return seeds
        predicted = {s: sum(o.dloss for o in solve(opt, target).values()) for s, opt in seeds.items()}
        return {s: seeds[s] for s in sorted(seeds, key=lambda s: (predicted[s], s))[:k]}

    def _confirm(self, options: dict[str, list[Option]], target: int, budget: int, opts: PackOptions,
                 facts: dict) -> tuple[float, PackResult, dict[str, Candidate]] | None:
        """Solve and pack until the artifact fits `budget` as closely as the options allow: the payload target
        grows by what a pack left unused and shrinks by any excess. (predicted dloss, result, encodings) or None."""
        best, last = None, None
        for _ in range(MAX_CONFIRM_ROUNDS):
            choice = solve(options, target)
            key = tuple((n, id(o)) for n, o in sorted(choice.items()))
            if key == last:
                break
            last = key
            predicted = sum(o.dloss for o in choice.values())
            doc = plan_document([(n, o.cand, o.dloss) for n, o in choice.items()], self.aliases, budget,
                                {"sensitivity": facts["sensitivity"], "start": facts["start"]})
            cands = {n: o.cand for n, o in choice.items()}
            res = self.pack(cands, {**facts, "plan": doc, "predicted_dloss_nats": predicted}, opts=opts)
            if res.total_bytes <= budget:
                if best is None or predicted < best[0] or (predicted == best[0] and res.total_bytes > best[1].total_bytes):
                    best = (predicted, res, cands)
                target += budget - res.total_bytes          # the manifest came out smaller: offer the rest
            else:                                           # below this choice's payload, or it repeats
                target = min(target, sum(c.bytes for c in cands.values())) - (res.total_bytes - budget)
        return best


    # --- choosing ---------------------------------------------------------------------------------------------
    def result(self, plan: dict[str, tuple[str, str | None]] | None = None, fill: bool = False,
               planner: PlannerConfig | None = None, budget_bytes: int | None = None) -> PackResult:
        """The artifact under budget_bytes (default opts.budget_bytes): an explicit `plan` (name -> (format,
        scale method or None); the rest default), the planner's when `fill`, else the default plan, or the
        planner's when the default does not fit and calibration allows it. BudgetError if nothing fits."""
        opts = self.opts if budget_bytes is None else replace(self.opts, budget_bytes=budget_bytes)
        base = {n: (f, None) for n, f in default_plan(self.shapes, opts).items()}
        if plan is not None:
            unknown = sorted(set(plan) - set(self.tensors))
            if unknown:
                raise UsageError(f"--plan names tensors the checkpoint does not have: {unknown[:5]}; it has "
                                 f"{sorted(self.tensors)[:8]}...")
            for a, t in self.aliases.items():
                if a in plan and plan[a][0] != {**base, **plan}[t][0]:
                    raise UsageError(f"--plan gives {a!r} format {plan[a][0]}, but it is an exact duplicate "
                                     f"stored as {t!r} ({ {**base, **plan}[t][0]}); give them the same format")
            res = self.fixed({**base, **plan}, "plan", opts)
        elif fill:
            return self.plan_to_budget(planner or PlannerConfig(), opts.budget_bytes)
        else:
            res = self.fixed(base, "default", opts)
            if res.total_bytes > opts.budget_bytes and self.evaluator is not None:
                log(f"pack: the default plan needs {res.total_bytes:,} B, over the budget {opts.budget_bytes:,} B: "
                    f"planning formats to fit", self.progress)
                return self.plan_to_budget(planner or PlannerConfig(), opts.budget_bytes)
        if res.total_bytes > opts.budget_bytes:
            biggest = sorted(((c["bytes"], n) for n, c in res.report["plan"]["tensors"].items()), reverse=True)[:3]
            hint = ("pass --calib-data so the planner can fit it" if self.evaluator is None and plan is None
                    else "use lower-bit formats or a larger --budget-bytes")
            raise BudgetError(f"the {res.report['mode']} plan packs to {res.file_bytes} B + code "
                              f"{res.code.compressed_bytes} B = {res.total_bytes} B, over the budget "
                              f"{opts.budget_bytes} B by {res.total_bytes - opts.budget_bytes} B; largest tensors "
                              f"(stored bytes): {', '.join(f'{n} {b} B' for b, n in biggest)}; {hint}")
        return res


def _tensor_size(task: tuple) -> int:
    """A per-tensor task's cost for scheduling: its tensor's size (the big ones start first)."""
    return int(np.asarray(task[1]).size)


def _targets(windows: np.ndarray | None) -> int | None:
    """Scored tokens in [N, L+1] windows (N x L), or None for no windows."""
    return None if windows is None else int(windows.shape[0] * (windows.shape[1] - 1))


def _method_applies(fmt: str, opts: PackOptions, has_hessian: bool) -> bool:
    """Whether opts.scale_method can encode fmt (the planner leaves out formats it cannot)."""
    if opts.scale_method == "best":
        return True
    avail = set(formats.get(fmt).methods(has_hessian))
    return not avail or opts.scale_method in avail
