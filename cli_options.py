"""The command line's option groups (click decorators shared by several commands) and the small converters from
their values to the jobs' request objects. cli.py composes them; no job logic lives here."""

from __future__ import annotations

from pathlib import Path

import click

from core.route_calibrate import RouteOptions
from core.sources import PGolfOptions

DEFAULT_BUDGET = 16_000_000


def options(*opts):
    """A decorator applying a group of click options in the order given."""
    def apply(f):
        for o in reversed(opts):
            f = o(f)
        return f
    return apply


def opt(*decls, help: str = "", **kw):
    """click.option, its default shown whenever it has one."""
    return click.option(*decls, help=help, show_default=kw.get("default") not in (None, False), **kw)


PATH = click.Path(path_type=Path)
device_option = opt("--device", default="auto", help="auto (the local rank's GPU when CUDA is present, else the "
                                                   "CPU) | cpu | cuda | cuda:N.")
json_option = opt("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
writes = options(json_option, opt("--force", is_flag=True, help="Replace an existing output golfpack did not "
                                                               "write (never an input of the run)."))
data_options = options(
    opt("--data", type=PATH, multiple=True, required=True,
        help="Shard file, folder of shards (its *_val_*.bin are scored), or text files (repeatable)."),
    opt("--tokenizer", type=PATH, required=True, help="The SentencePiece model (.model)."))
pgolf_options = options(
    opt("--mlp-power", type=int, help="Parameter Golf checkpoints: MLP activation relu^p (default 2)."),
    opt("--rope-base", type=float, help="Parameter Golf checkpoints: RoPE base (default 10000)."),
    opt("--softcap", type=float, help="Parameter Golf checkpoints: logit softcap (default 30)."),
    opt("--layer-schedule", help="Parameter Golf checkpoints with looped layers: the block of every applied "
                                 "layer, comma-separated (e.g. 0,1,2,3,4,5,3,4,5,6,7)."))
route_options = options(
    opt("--route-fraction", default=0.25, help="Target fraction of positions that get the extra pass."),
    opt("--route-signal", default="auto", help="auto (the legal signal capturing most of the oracle's gain on the "
                                               "calibration tokens), a signal name, or none (uniform depth)."),
    opt("--route-cap", default="auto", help="Hard cap on the fraction (causal token bucket): auto = fraction + 0.05, "
                                            "a number, or none."),
    opt("--route-calib-tokens", type=int, help="Training tokens calibrating the rule (default 65,536, at most the "
                                                "checkpoint's hold-out)."))


def pgolf_from(kw: dict) -> PGolfOptions:
    sched = kw.pop("layer_schedule")
    return PGolfOptions(kw.pop("mlp_power"), kw.pop("rope_base"), kw.pop("softcap"),
                        PGolfOptions.parse_schedule(sched) if sched else None)


def route_from(kw: dict) -> RouteOptions | None:
    return RouteOptions.from_options(*(kw.pop(f"route_{k}") for k in ("fraction", "signal", "cap", "calib_tokens")))


train_options = options(
    opt("--vocab-size", type=int, help="Default: the tokenizer's size."), opt("--d-model", default=128),
    opt("--n-heads", default=4), opt("--n-kv-heads", default=2), opt("--mlp-mult", default=2),
    opt("--passes", "n_passes", default=3, help="K: block passes."), opt("--seq-len", default=128),
    opt("--blocks", "n_blocks", default=1, help="Distinct blocks (1: a recurrent core; K: a static transformer)."),
    opt("--train-seconds", type=float, help="Time budget (default 180 s)."),
    opt("--steps", type=int, help="Step count instead of a time budget."),
    opt("--max-wallclock-seconds", type=float, help="Hard cap on the training loop's wall clock."),
    opt("--batch-size", type=int, help="Sequences per step over all ranks (default 16)."),
    opt("--batch-tokens", type=int, help="Tokens per step over all ranks, instead of --batch-size."),
    opt("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]),
        help="auto: the local rank's GPU when CUDA is present, else the CPU."),
    opt("--compile", "compile_", is_flag=True, help="torch.compile the training step (GPU)."),
    opt("--lr", default=3e-3), opt("--seed", default=0), opt("--eval-every", default=100),
    opt("--two-exit", is_flag=True, help="Train both routing exits: mean of the pass-K and K+1 losses."),
    opt("--holdout-tokens", default=65_537, help="Never train on the training shards' last N tokens: pack "
                                                 "calibrates there (0 holds none out)."))


pack_options = options(
    opt("--budget-bytes", default=DEFAULT_BUDGET, help="Cap on artifact + counted code bytes (decimal)."),
    opt("--embed-format", default="int8_row", help="Default plan: the embedding's format."),
    opt("--matrix-format", default="int6_row", help="Default plan: the other matrices' format."),
    opt("--control-format", default="fp16", help="Default plan: the small control tensors' format."),
    opt("--tokenizer", type=PATH, help="The SentencePiece model to record (.pt/.ptz/safetensors carry none)."),
    opt("--calib-data", type=PATH, help="Calibration shards: a folder (its *_train_*.bin only) or one *_train_* "
                                        "shard; default: the checkpoint's folder when it holds training shards."),
    opt("--calib-tokens", type=int, help="Training tokens for GPTQ Hessians and the planner's sensitivities "
                                          "(default 8,192, at most the checkpoint's hold-out)."),
    opt("--joint-tokens", type=int, help="Training tokens scoring whole candidate plans (default 65,536, at most "
                                         "the hold-out; 0: the --calib-tokens set)."),
    opt("--sensitivity", default="auto", type=click.Choice(["auto", "measured", "hessian"]),
        help="How the planner predicts each option's loss: measured, hessian (2-3 probes per tensor), or auto."),
    opt("--calib-seconds", type=float, help="auto: measure every option only if options x one evaluation fit."),
    opt("--fill/--no-fill", default=None, help="The planner fills the budget (default: when --budget-bytes is given)."),
    opt("--plan", "plan_file", type=PATH, help="An explicit per-tensor plan (JSON, as --plan-out writes)."),
    opt("--plan-out", type=PATH, help="Write the chosen plan as JSON."),
    opt("--scale-method", default="best", type=click.Choice(["best", "absmax", "clip_search", "sdclip", "gptq"]),
        help="How integer scales are chosen; best = least (Hessian-weighted) error per tensor."),
    opt("--codecs", "codec_list", default="zstd,ans,brotli-shuffle",
        help="Codecs tried for every section; the smallest wins (raw if none is smaller)."),
    opt("--formats", "menu", help="Comma-separated formats the planner may choose for matrices."))
