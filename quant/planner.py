"""The bit-allocation planner: one (format, scale method) per tensor, minimising the predicted increase in
calibration loss subject to the real packed size fitting a byte budget.

1. Options: quant/candidates.py encodes each tensor in every menu format (best scale method each) and
   measures its stored bytes and its error; options dominated in (bytes, error) are dropped.
2. Sensitivities: the change in mean calibration loss (nats/token, TRAINING tokens) when that one tensor
   takes that option ("measured"; changes below a noise floor follow a power law in the error fitted to the
   significant ones, then an isotonic fit makes them monotone in the error, so noise cannot rank a worse
   reconstruction above a better one), or, for large models, alpha_t x error with alpha_t fitted
   per tensor on two measured probes ("hessian"; when both are below the noise floor the coarsest option
   is measured too, and an unresolved slope is bounded by floor / largest probed error, never taken as
   zero); "auto" measures when the evaluations fit a cap.
3. Solve: the multiple-choice knapsack, exactly, by dynamic programming over bytes (a tensor's bytes are
   rounded up to the DP's byte unit, so a solution never over-runs the payload budget).
4. Joint check: per-tensor losses do not add up exactly (at low bits the damage compounds), so the solve is
   also run from uniform starting points (`uniform_seeds`: every matrix at b bits, the embedding at b or 8 —
   the schemes entries pick by hand), each allowed only the options that improve on its start
   (`restrict`: no more loss predicted and no more error); quant/pipeline.py measures the joint
   calibration loss of every such plan and keeps the best.
quant/pipeline.py confirms by packing and adjusts for the manifest. Must not write files.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import BudgetError, ConfigError, UsageError
from common.progress import Progress
from packer import constants as C
from quant import formats
from quant.candidates import VARIANTS, Candidate

DEFAULT_MENU = tuple(f"int{b}_{g}" for b in (8, 7, 6, 5, 4, 3) for g in ("row", "g64", "g128")) + (
    "ternary_row", "ternary_g64", "nf4_g64", "fp16")
SENSITIVITY_MODES = ("auto", "measured", "hessian", "proxy")
PLAN_VERSION = 1
DP_MAX_UNITS = 200_000


@dataclass(frozen=True)
class PlannerConfig:
    menu: tuple[str, ...] = DEFAULT_MENU
    sensitivity: str = "auto"
    max_measured_evals: int = 300
    max_measured_seconds: float | None = None   # auto: measure only if evals x one eval's time fit this
    noise_nats: float = 2e-4        # measured loss changes below this are treated as noise (see _smooth)
    max_joint_starts: int | None = None   # joint checks of uniform starts (best predicted first); None: by size

    def __post_init__(self) -> None:
        unknown = [f for f in self.menu if f not in C.TENSOR_FORMATS]
        if not self.menu or unknown:
            raise ConfigError(f"--formats: unknown or no formats {unknown}; known: "
                              f"{sorted(C.TENSOR_FORMATS)}")
        if self.sensitivity not in SENSITIVITY_MODES:
            raise ConfigError(f"--sensitivity {self.sensitivity!r}: one of {SENSITIVITY_MODES}")
        if not self.noise_nats >= 0:
            raise ConfigError(f"PlannerConfig.noise_nats={self.noise_nats}: must be >= 0")
        if self.max_measured_seconds is not None and not self.max_measured_seconds >= 0:
            raise ConfigError(f"--calib-seconds {self.max_measured_seconds}: must be >= 0")
        if self.max_measured_evals < 0:
            raise ConfigError(f"PlannerConfig.max_measured_evals={self.max_measured_evals}: must be >= 0")


@dataclass
class Option:
    cand: Candidate
    dloss: float = 0.0          # predicted loss increase, nats/token
    measured: float | None = None


def _by_family(opts: list[Option]) -> list[list[Option]]:
    """The options grouped by error family (errors compare only within one), families in name order."""
    return [[o for o in opts if o.cand.family == fam] for fam in sorted({o.cand.family for o in opts})]


def isotonic(values: list[float]) -> list[float]:
    """Least-squares non-decreasing fit (pool adjacent violators)."""
    blocks: list[list[float]] = []           # [mean, weight]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2 = blocks.pop()
            m1, w1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    return [m for m, w in blocks for _ in range(int(w))]


def _smooth(opts: list[Option], noise_nats: float) -> None:
    """dloss from the measurements, per error family: a measurement above the noise floor stands; one below it
    is replaced by a power law dloss = a * error^b fitted (in logs) to the significant ones, capped at the
    floor, so that tiny differences of noise cannot rank a worse reconstruction above a better one and spare
    bytes still buy lower error; then an isotonic fit in increasing error, floored at 0."""
    for group in _by_family(opts):
        group = sorted(group, key=lambda o: o.cand.error)
        sig = [(math.log(o.cand.error), math.log(o.measured)) for o in group
               if o.measured > noise_nats and o.cand.error > 0]
        top = max((o.cand.error for o in group), default=0.0)
        if len(sig) >= 2:
            xs, ys = np.array(sig).T
            b = float(np.clip(np.polyfit(xs, ys, 1)[0], 0.5, 2.0)) if np.ptp(xs) > 0 else 1.0
            a = float(np.mean(ys - b * xs))
        elif sig:
            b, a = 1.0, sig[0][1] - sig[0][0]
        else:
            b, a = 1.0, math.log(noise_nats / top) if top > 0 else 0.0
        vals = []
        for o in group:
            curve = math.exp(a) * o.cand.error ** b if o.cand.error > 0 else 0.0
            vals.append(o.measured if o.measured > noise_nats else min(curve, noise_nats))
        for o, v in zip(group, isotonic(vals)):
            o.dloss = max(v, 0.0)


def sensitivities(options: dict[str, list[Option]], loss_of, mode: str, max_evals: int,
                  progress: bool = True, noise_nats: float = 2e-4, eval_seconds: float | None = None,
                  max_seconds: float | None = None, slopes=None, joint_loss_of=None) -> str:
    """Fill Option.dloss for every tensor with more than one option; returns the mode used.

    loss_of(name, cand) -> loss increase (nats/token) with that one tensor replaced by the candidate. "auto"
    measures every option when there are at most max_evals of them and, given both, their estimated time
    (count x eval_seconds, one evaluation's measured time) is at most max_seconds; else "proxy" when `slopes`
    (a function returning quant/slopes.py's slopes, called only then) and joint_loss_of(name -> cand) are
    given, else "hessian".
    """
    varying = {n: o for n, o in options.items() if len(o) > 1}
    n_all = sum(len(o) for o in varying.values())
    if mode == "auto":
        in_time = max_seconds is None or eval_seconds is None or n_all * eval_seconds <= max_seconds
        mode = ("measured" if n_all <= max_evals and in_time else
                "proxy" if slopes is not None and joint_loss_of is not None else "hessian")
    if mode == "proxy":
        if slopes is None or joint_loss_of is None:
            raise ConfigError("--sensitivity proxy needs calibration data (the output-gradient slopes)")
        _proxy(varying, slopes(), loss_of, joint_loss_of, noise_nats, progress)
        return mode
    probes = {n: (o if mode == "measured" else _probes(o)) for n, o in varying.items()}
    bar = Progress(f"planner: measuring sensitivities ({mode})", sum(len(p) for p in probes.values()),
                   enabled=progress)
    done = 0
    for name, opts in varying.items():
        for o in probes[name]:
            o.measured = float(loss_of(name, o.cand))
            done += 1
            bar.update(done, tensor=name.split(".weight")[0][-24:])
        if mode == "measured":
            _smooth(opts, noise_nats)
        else:
            _fit_linear(name, opts, loss_of, noise_nats)
    return mode


def _fit_linear(name: str, opts: list[Option], loss_of, noise_nats: float) -> None:
    """hessian mode's slope for one tensor whose probes are measured: fallback probes where they all measured
    noise, then dloss = alpha x error."""
    for o in _fallback_probes(opts, noise_nats):
        o.measured = float(loss_of(name, o.cand))
    _linear(opts, noise_nats)


def role(name: str) -> str:
    """A tensor's role across layers: its name with the layer numbers taken out (blocks.3.mlp.fc.weight ->
    blocks.#.mlp.fc.weight); the proxy's slopes are calibrated once per role."""
    return re.sub(r"\.\d+\.", ".#.", name)


def _proxy(varying: dict[str, list[Option]], slopes: dict[str, float], loss_of, joint_loss_of,
           noise_nats: float, progress: bool) -> None:
    """Sensitivities at the users' scale, in a number of evaluations that does not grow with tensors x options.

    Options with a Hessian-weighted error get dloss = kappa_role x slope x error: the slope from one gradient
    pass (quant/slopes.py), kappa from one measured joint evaluation per role (every tensor of the role at
    its middle option at once, against the sum of their proxies; a role whose joint change is noise gets the
    most kappa can be given the floor). Other options (no Linear: embeddings, tied heads) are fitted as in
    hessian mode, from two or three measured probes."""
    by_role: dict[str, list[str]] = {}
    for n, opts in varying.items():
        if n in slopes and any(o.cand.family == "hessian" for o in opts):
            by_role.setdefault(role(n), []).append(n)
    direct = [n for n in varying if not any(n in names for names in by_role.values())]
    bar = Progress("planner: sensitivities (proxy: one joint evaluation per role)",
                   len(by_role) + sum(len(_probes(varying[n])) for n in direct), enabled=progress)
    done = 0
    for names in by_role.values():
        probe = {n: _middle([o for o in varying[n] if o.cand.family == "hessian"]) for n in names}
        predicted = sum(slopes[n] * probe[n].cand.error for n in names)
        measured = float(joint_loss_of({n: probe[n].cand for n in names}))
        kappa = (measured / predicted if measured > noise_nats else noise_nats / predicted) if predicted > 0 else 0.0
        for n in names:
            probe[n].measured = measured if len(names) == 1 else None
            for o in varying[n]:
                if o.cand.family == "hessian":
                    o.dloss = kappa * slopes[n] * o.cand.error
        done += 1
        bar.update(done, role=role(names[0])[-24:])
    for n in direct:
        for o in _probes(varying[n]):
            o.measured = float(loss_of(n, o.cand))
            done += 1
            bar.update(done, tensor=n[-24:])
        _fit_linear(n, varying[n], loss_of, noise_nats)
    for n in (n for names in by_role.values() for n in names):    # a plain family beside the hessian one
        plain = [o for o in varying[n] if o.cand.family != "hessian"]
        if plain:
            for o in _probes(plain):
                o.measured = float(loss_of(n, o.cand))
            _fit_linear(n, plain, loss_of, noise_nats)


def _middle(opts: list[Option]) -> Option:
    """The option in the middle of the byte order (its proxy is neither noise nor far from linear)."""
    return sorted(opts, key=lambda o: (o.cand.bytes, o.cand.error))[len(opts) // 2]


def _fallback_probes(opts: list[Option], noise_nats: float) -> list[Option]:
    """Per family whose probes all measured below the noise floor, its largest-error option not yet measured:
    a slope fitted to noise alone would call the coarsest formats free."""
    out = []
    for group in _by_family(opts):
        if not any(o.measured is not None and o.measured > noise_nats for o in group):
            rest = [o for o in group if o.measured is None]
            if rest:
                out.append(max(rest, key=lambda o: o.cand.error))
    return out


def _linear(opts: list[Option], noise_nats: float) -> None:
    """dloss = alpha x error per family, alpha least squares through 0 over the probes measured above the
    noise floor; with none, alpha = floor / the largest probed error (the most the slope can be, given that
    the coarsest probe stayed under the floor), so an unresolved tensor is never predicted free."""
    for group in _by_family(opts):
        meas = [o for o in group if o.measured is not None and o.cand.error > 0]
        sig = [o for o in meas if o.measured > noise_nats]
        if sig:
            alpha = sum(o.measured * o.cand.error for o in sig) / sum(o.cand.error ** 2 for o in sig)
        else:
            top = max((o.cand.error for o in meas), default=0.0)
            alpha = noise_nats / top if top > 0 else 0.0
        for o in group:
            o.dloss = alpha * o.cand.error


def _probes(opts: list[Option]) -> list[Option]:
    """Per family, the second-cheapest option (the cheapest, often ternary, is far from linear) and the
    one in the middle of the byte order."""
    out = []
    for group in _by_family(opts):
        g = sorted(group, key=lambda o: o.cand.bytes)
        out.extend({id(o): o for o in (g[min(1, len(g) - 1)], g[len(g) // 2])}.values())
    return out


def solve(options: dict[str, list[Option]], payload_budget: int) -> dict[str, Option]:
    """Least total dloss with sum of bytes <= payload_budget: exact DP over bytes in units of
    ceil(budget / DP_MAX_UNITS) (bytes rounded up). Ties go to the option with the smaller error."""
    names = sorted(options)
    cheapest = sum(min(o.cand.bytes for o in options[n]) for n in names)
    if cheapest > payload_budget:
        raise BudgetError(f"even the smallest option of every tensor needs {cheapest} payload bytes, more than "
                          f"the {payload_budget} left for tensors; raise --budget-bytes or add lower-bit formats "
                          f"to the menu")
    unit = max(1, -(-payload_budget // DP_MAX_UNITS))
    U = payload_budget // unit
    dp = np.zeros(U + 1)
    picks = []
    for n in names:
        opts = sorted(options[n], key=lambda o: (o.cand.error, o.cand.bytes))
        best = np.full(U + 1, np.inf)
        arg = np.zeros(U + 1, dtype=np.int32)
        for k, o in enumerate(opts):
            w = -(-o.cand.bytes // unit)
            if w > U:
                continue
            cand = np.full(U + 1, np.inf)
            cand[w:] = dp[:U + 1 - w] + o.dloss
            better = cand < best
            best = np.where(better, cand, best)
            arg = np.where(better, k, arg)
        dp = best
        picks.append((n, opts, arg))
    if not np.isfinite(dp[U]):
        raise BudgetError(f"no combination of options fits {payload_budget} payload bytes")
    out, u = {}, U
    for n, opts, arg in reversed(picks):
        o = opts[int(arg[u])]
        out[n] = o
        u -= -(-o.cand.bytes // unit)
    return out


def bits_of(fmt: str) -> int:
    """Nominal bits per value of a format (a float passthrough's own width)."""
    return formats.get(fmt).nominal_bits


def uniform_seeds(options: dict[str, list[Option]], is_embedding, payload_budget: int
                  ) -> dict[str, dict[str, Option]]:
    """Starting plans that fit payload_budget: "int<b>/emb<e>" puts every tensor with a choice at its cheapest
    option of b bits (the cheapest wider one if none has b bits) and the embedding at e in {b, 8} bits."""
    widths = sorted({bits_of(o.cand.format) for opts in options.values() for o in opts
                     if not formats.get(o.cand.format).is_float})

    def at(opts: list[Option], b: int) -> Option:
        wide = [o for o in opts if bits_of(o.cand.format) >= b] or opts
        exact = [o for o in wide if bits_of(o.cand.format) == b] or wide
        return min(exact, key=lambda o: (o.cand.bytes, o.cand.error))

    out = {}
    for b in widths:
        for e in sorted({b, 8}):
            if e < b:
                continue
            seed = {n: at(o, e if is_embedding(n) else b) for n, o in options.items()}
            if sum(o.cand.bytes for o in seed.values()) <= payload_budget:
                out[f"int{b}/emb{e}"] = seed
    return out


def restrict(options: dict[str, list[Option]], seed: dict[str, Option]) -> dict[str, list[Option]]:
    """Per tensor, its seed option and its upgrades: predicted to lose no more than the seed and, within the
    seed's error family, with no more reconstruction error (a coarser format whose measured loss is noise
    is not an upgrade)."""
    def up(o: Option, s: Option) -> bool:
        return o is s or (o.dloss <= s.dloss and (o.cand.family != s.cand.family or o.cand.error <= s.cand.error))
    return {n: [o for o in opts if up(o, seed[n])] for n, opts in options.items()}


# --- plan files ----------------------------------------------------------------------------------------------
def plan_document(rows: list[tuple[str, Candidate, float | None]], aliases: dict[str, str], budget_bytes: int,
                  extra: dict) -> dict:
    """The JSON plan (--plan-out; --plan reads it back): per stored tensor its format, scale method, stored
    bytes and predicted loss increase (None when not predicted), plus the aliases."""
    tensors = {n: {"format": c.format, "scale": c.label, "bytes": c.bytes, "predicted_dloss_nats": d}
               for n, c, d in sorted(rows, key=lambda r: r[0])}
    known = [d for _, _, d in rows if d is not None]
    return {"golfpack_plan": PLAN_VERSION, "budget_bytes": budget_bytes, "tensors": tensors,
            "aliases": dict(sorted(aliases.items())),
            "predicted_dloss_nats": float(sum(known)) if known else None, **extra}


def is_plan_file(path: Path) -> bool:
    """A JSON plan as --plan-out writes it (what a pack may replace without --force)."""
    try:
        return "golfpack_plan" in json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def read_plan(path: Path) -> dict[str, tuple[str, str | None]]:
    """name -> (format, scale label or None) from a plan JSON: {"tensors": {name: fmt | {"format", "scale"}}}
    (as --plan-out writes it) or a flat {name: fmt | {...}}; a scale label is METHOD or METHOD:VARIANT."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--plan {path}: cannot read a JSON plan: {exc}") from None
    table = doc.get("tensors", doc) if isinstance(doc, dict) else None
    if not isinstance(table, dict):
        raise UsageError(f"--plan {path}: expected an object {{\"tensors\": {{name: format}}}}")
    out = {}
    for name, v in table.items():
        fmt, scale = (v, None) if isinstance(v, str) else (
            (v.get("format"), v.get("scale")) if isinstance(v, dict) else (None, None))
        if fmt not in C.TENSOR_FORMATS:
            raise UsageError(f"--plan {path}: tensor {name!r} has format {fmt!r}; known: {sorted(C.TENSOR_FORMATS)}")
        if scale is not None and (not isinstance(scale, str) or scale.partition(":")[0] not in C.SCALE_METHODS
                                  or scale.partition(":")[2] not in ("", *VARIANTS.get(scale.partition(":")[0], ()))):
            raise UsageError(f"--plan {path}: tensor {name!r} has scale {scale!r}; known: METHOD or METHOD:VARIANT "
                             f"with METHOD in {sorted(C.SCALE_METHODS)} and variants {VARIANTS} (or omit it)")
        if scale is not None and formats.get(fmt).is_float:
            raise UsageError(f"--plan {path}: tensor {name!r} is {fmt}, which has no scale method")
        out[name] = (fmt, scale)
    return out
