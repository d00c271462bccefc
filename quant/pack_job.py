"""The pack job: one model source and one frozen request in, one artifact out. Every caller packs through here:
`golfpack pack`, `golfpack demo` and every benchmark.

`pack_job(source, request)` checks the cheap things first (the output is writable and is none of the
inputs; the calibration sizes fit the checkpoint's hold-out), then `PackJob` loads the calibration tokens
(quant.calibrate.unseen_tokens: the one place that decides which training tokens a checkpoint never saw),
builds the manifest body from the source (its family's hooks: model, uniform routing, tokenizer, source
hash), collects Hessians and the planner's evaluators (quant/pipeline.py), adds the routing rule's step when
the family can carry one (quant/route_step.py), chooses the plan (explicit, planner, or default) and packs.
The artifact is written atomically, never over an input. A `PackJob` can also pack the same source at
several budgets, sharing calibration and sensitivities (the quantization benchmark does).
"""

from __future__ import annotations

import json
import resource
from dataclasses import dataclass, field, replace
from pathlib import Path

from common.atomic import check_output, refuse_same_path, write_bytes_atomic
from common.errors import BudgetError, UsageError
from common.stages import Stages
from core.distributed import local_context
from core.route_calibrate import DEFAULT_ROUTE_TOKENS, RouteOptions
from core.sources import ModelSource, PGolfOptions, load_source
from core.tokenizer import Tokenizer
from packer import constants as C
from packer.audit import format_routing
from packer.code_bytes import CodeCount, count_code
from packer.reader import looks_like_artifact, parse_artifact
from packer.writer import write_artifact
from quant.assemble import PackResult
from quant.calibrate import CalibConfig, batch_windows, calibration_sets, default_calib_data, unseen_tokens
from quant.candidates import smallest_bytes_estimate
from quant.options import PackOptions, is_control
from quant.pipeline import Packer, log
from quant.planner import PlannerConfig, is_plan_file
from quant.route_step import RouteStep


@dataclass(frozen=True)
class PackRequest:
    """Everything a pack needs besides the model: what to write, how to plan, what to calibrate on."""

    out: Path | None = None                       # the artifact path (None: pack_job writes nothing)
    options: PackOptions = field(default_factory=PackOptions)
    calib: CalibConfig = field(default_factory=CalibConfig)   # data None: the checkpoint's folder if it has shards
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    plan: dict | None = None                      # explicit name -> (format, scale or None) (quant.planner.read_plan)
    fill: bool = False                            # the planner fills options.budget_bytes
    route: RouteOptions | None = field(default_factory=RouteOptions)   # None: uniform depth
    tokenizer: Tokenizer | None = None            # recorded (and checked against the source's own)
    plan_out: Path | None = None                  # write the chosen plan as JSON here
    code: CodeCount | None = None                 # counted code (default: golfpack's runtime modules)
    progress: bool = True
    extra_inputs: tuple[Path, ...] = ()           # other files the run reads (tokenizer, plan): never overwritten
    force: bool = False                           # replace an existing output golfpack did not write
    device: str = "auto"                          # where loss measurements run: auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        if self.plan is not None and self.fill:
            raise UsageError("--plan gives the formats, so the planner does not choose them: drop --fill")


class PackJob:
    """One source's packing session: calibration, Hessians and sensitivities computed once, packs on demand."""

    def __init__(self, source: ModelSource, request: PackRequest, stages: Stages | None = None) -> None:
        self.source, self.request = source, request
        self.stages = stages or Stages()
        device = local_context(request.device).device        # refused before any work when it is not there
        cfg, calib, fam = source.config, request.calib, source.family_hooks
        body = source.manifest_body(source.resolve_tokenizer(request.tokenizer))
        data = calib.data if calib.data is not None else (
            default_calib_data(source.paths[0]) if source.paths else None)
        with self.stages.stage("calibration tokens"):
            self.unseen = unseen_tokens(source.meta, Path(data), cfg.vocab_size) if data is not None else None
        route = None
        if request.route is not None and fam.can_route:
            if self.unseen is None:
                log("golfpack: pack: no calibration shards (--calib-data), so no routing rule: uniform depth",
                    request.progress)
            else:
                n = self.unseen.take(request.route.calib_tokens, DEFAULT_ROUTE_TOKENS, "--route-calib-tokens")
                route = RouteStep(self.unseen.tokens, replace(request.route, calib_tokens=n))
        windows = joint = None
        if self.unseen is not None:
            windows, joint = calibration_sets(self.unseen, calib, fam.context(cfg), request.progress,
                                              params=sum(v.numel() for v in source.tensors.values()))
        else:
            log("pack: no calibration data (no *_train_*.bin shards beside the checkpoint; pass --calib-data): "
                "scales by data-free clip choice, no GPTQ, no planner", request.progress)
        tensors = {k: v.detach().float().numpy() for k, v in source.tensors.items()}
        self.packer = Packer(source.model(share=True), tensors, body, request.options, windows=windows,
                             joint_windows=joint, route=route, code=request.code, progress=request.progress,
                             batch_size=batch_windows(calib.batch_size, fam.context(cfg), cfg.vocab_size),
                             stages=self.stages, device=device)
        self.packer.report["device"] = str(device)
        if self.packer.report["calibration"] is not None:
            self.packer.report["calibration"]["source"] = self.unseen.report()
            self.packer.report["calibration"]["route_tokens"] = route.opts.calib_tokens if route else None

    def result(self, budget_bytes: int | None = None, plan: dict | None = None) -> PackResult:
        """The artifact for budget_bytes (default: the request's), by `plan` (explicit formats) or else the
        request's plan, planner or default."""
        r = self.request
        if plan is not None:
            return self.packer.result(plan, False, r.planner, budget_bytes)
        return self.packer.result(r.plan, r.fill, r.planner, budget_bytes)


def pack_file(checkpoint: Path, pgolf: PGolfOptions, request: PackRequest) -> PackResult:
    """The pack command: load the checkpoint (any family; a stage of its own) and pack_job it."""
    stages = Stages()
    with stages.stage("load"):
        source = load_source(checkpoint, pgolf)
    return pack_job(source, request, stages)


def pack_job(source: ModelSource, request: PackRequest, stages: Stages | None = None) -> PackResult:
    """Pack `source` as `request` says; write the artifact (and the plan) when the request names paths."""
    inputs = [*source.paths, *request.extra_inputs]
    if request.out is not None:                  # before any work: writable, not an input, ours or --force
        check_output(request.out, inputs, request.force, looks_like_artifact, "a golfpack artifact")
    if request.plan_out is not None:
        check_output(request.plan_out, inputs + [request.out], request.force, is_plan_file, "a golfpack plan")
    stages = stages or Stages()
    with stages.stage("budget check (byte estimates)"):
        check_budget_possible(source, request)
    job = PackJob(source, request, stages)
    res = job.result()
    if request.out is not None:
        with job.stages.stage("write"):
            write_artifact(Path(request.out), res.data, inputs=inputs)
        res.report["stages"] = job.stages.report()
    if request.plan_out is not None:
        refuse_same_path(request.plan_out, [*inputs, request.out])
        write_bytes_atomic(request.plan_out, (json.dumps(res.report.get("plan", {}), indent=2, sort_keys=True)
                                              + "\n").encode())
    return res


FLOOR_MARGIN = 0.8     # the estimate may exceed the smallest plan's real bytes (entropy coders beat order-0): fail early only below this


def check_budget_possible(source: ModelSource, request: PackRequest) -> None:
    """BudgetError in seconds, before any calibration, when even the smallest plan cannot fit: the counted code,
    the header and trailer, and about the fewest bytes each tensor can be stored in (quant.candidates.
    smallest_bytes_estimate over the planner's menu; control tensors in their control format)."""
    opts, code = request.options, request.code or count_code()
    floor = 0.0
    for name, t in source.tensors.items():
        w = t.detach().float().numpy()
        menu = (opts.control_format,) if is_control(name, tuple(w.shape)) else request.planner.menu
        floor += smallest_bytes_estimate(w, menu)
    need = code.compressed_bytes + C.HEADER_BYTES + C.TRAILER_BYTES + FLOOR_MARGIN * floor
    if opts.budget_bytes < need:
        raise BudgetError(f"--budget-bytes {opts.budget_bytes:,} cannot be met: the counted code alone is "
                          f"{code.compressed_bytes:,} B and the smallest plan's tensors need about {floor:,.0f} B "
                          f"more (estimated from {sum(t.numel() for t in source.tensors.values()):,} parameters at "
                          f"the menu's fewest bits); raise the budget or add lower-bit formats to --formats")


def pack_report(res: PackResult, out: Path | None) -> dict:
    """The pack command's report: bytes against the budget, the plan, scales, aliases, planning facts, routing."""
    return {"artifact": None if out is None else str(out), "file_bytes": res.file_bytes,
            "code_bytes": res.code.compressed_bytes, "total_bytes": res.total_bytes, "budget_bytes": res.budget_bytes,
            "headroom_bytes": res.budget_bytes - res.total_bytes, "fits": res.fits, "plan": res.plan,
            "scales": res.scales, "aliases": res.aliases,
            "planning": {k: v for k, v in res.report.items() if k != "plan"},
            "routing": parse_artifact(res.data).manifest["routing"],
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,   # this process's peak
            "peak_tree_rss_bytes": max((s.get("peak_tree_rss_bytes", 0) for s in
                                        (res.report.get("stages") or {}).values()), default=None)}  # with workers


def format_pack(rep: dict) -> str:
    """One line of bytes against the budget, then the routing rule in words."""
    how = rep["planning"].get("mode", "default")
    return (f"wrote {rep['artifact']}: {rep['file_bytes']:,} B + code {rep['code_bytes']:,} B = {rep['total_bytes']:,} B "
            f"of {rep['budget_bytes']:,} B ({how} plan)" + "\n".join(format_routing(rep["routing"])))
