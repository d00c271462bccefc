"""golfpack's command line: options -> a frozen request -> one job function (living with the package that owns
it) -> its report, printed as text or one JSON document (--json); progress and logs on stderr. Errors: one line
and the error class's exit code (README "Exit codes"); tracebacks and third-party warnings only with --debug.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import click

from cli_options import (
    DEFAULT_BUDGET,
    PATH,
    data_options,
    device_option,
    json_option,
    opt,
    pack_options,
    pgolf_from,
    pgolf_options,
    route_from,
    route_options,
    train_options,
    writes,
)
from common import __version__
from common.errors import INTERNAL_ERROR_EXIT_CODE, BudgetError, GolfpackError
from core.config import ModelConfig
from core.dataset import data_job, prepare_default_data
from core.distributed import read_dist_env
from core.sources import format_ingest, ingest_job, load_source
from core.tokenizer import Tokenizer
from core.train import TrainConfig
from core.train_job import format_train, run_train, train_configs, train_report
from packer.audit import audit_file, format_audit
from quant.calibrate import CalibConfig
from quant.options import PackOptions
from quant.pack_job import PackRequest, format_pack, pack_file, pack_job, pack_report
from quant.planner import PlannerConfig, read_plan
from verify.experiment import ExperimentOptions, run_experiment
from verify.job import VerifyRequest, verify_job
from verify.report import demo_summary, format_demo_summary, format_experiment, format_verify
from verify.submission import export_job, format_export
from verify.unpack import format_unpack, unpack_job


class GolfpackGroup(click.Group):
    def invoke(self, ctx: click.Context):          # one line per error, tracebacks only with --debug
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except GolfpackError as exc:
            if debug:
                raise
            click.echo(f"golfpack: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if debug:
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            click.echo(f"golfpack: internal error: {type(exc).__name__}: {first}; rerun with --debug for the "
                       f"traceback", err=True)
            ctx.exit(INTERNAL_ERROR_EXIT_CODE)


def emit(report: dict, as_json: bool, text: str) -> None:
    click.echo(json.dumps(report, indent=2, sort_keys=True, default=str) if as_json else text)


def fail_over_budget(rep: dict) -> None:
    """The one budget rule: a report whose counted total is over its budget exits non-zero (after printing)."""
    if not rep["fits"]:
        raise BudgetError(f"over budget by {rep['total_bytes'] - rep['budget_bytes']:,} B "
                          f"({rep['total_bytes']:,} B counted, budget {rep['budget_bytes']:,} B)")


@click.group(cls=GolfpackGroup)
@click.version_option(__version__, prog_name="golfpack")
@click.option("--debug", is_flag=True, help="Show full tracebacks and third-party warnings.")
def main(debug: bool) -> None:
    """Pack a compact recurrent language model into a byte budget, audit it, verify what it scores."""
    if not debug:                      # golfpack's own messages only; dependencies' noise with --debug
        logging.getLogger().addHandler(logging.NullHandler())
        warnings.simplefilter("ignore")


# --- train ---------------------------------------------------------------------------------------------------
@main.command()
@opt("--data", type=PATH, required=True, help="Folder with *_train_*.bin and *_val_*.bin shards.")
@opt("--tokenizer", type=PATH, required=True, help="The SentencePiece model (.model).")
@opt("--out", type=PATH, required=True, help="Output folder.")
@opt("--name", default="model", help="Checkpoint file stem.")
@train_options
@writes
def train(data, tokenizer, out, name, as_json, force, **kw):
    """Train a recurrent core on token shards; save safetensors + JSON config."""
    kw["vocab_size"] = kw["vocab_size"] or Tokenizer.load(tokenizer).vocab_size
    res = run_train(data, tokenizer, out, *train_configs(**kw), name=name, force=force)
    if res.rank == 0:                  # under torchrun only rank 0 reports
        emit(rep := train_report(res), as_json, format_train(rep))


@main.command()
@click.argument("checkpoint", type=PATH)
@opt("-o", "--out", type=PATH, required=True, help="Checkpoint stem: writes STEM.safetensors, STEM.json.")
@opt("--tokenizer", type=PATH, required=True, help="The SentencePiece model the checkpoint was trained with.")
@pgolf_options
@writes
def ingest(checkpoint, out, tokenizer, as_json, force, **kw):
    """Read a Parameter Golf checkpoint (.pt, .ptz, safetensors) into a golfpack checkpoint (family pgolf)."""
    rep = ingest_job(checkpoint, out, tokenizer, pgolf_from(kw), force)
    emit(rep, as_json, format_ingest(rep))


# --- pack and unpack -------------------------------------------------------------------------------------------
@main.command()
@click.argument("checkpoint", type=PATH)
@opt("-o", "--out", type=PATH, required=True, help="Artifact path (.gpk).")
@pack_options
@device_option
@pgolf_options
@route_options
@writes
@click.pass_context
def pack(ctx, checkpoint, out, budget_bytes, tokenizer, calib_data, calib_tokens, joint_tokens, sensitivity,
         calib_seconds, fill, plan_file, plan_out, scale_method, codec_list, menu, device, as_json, force, **kw):
    """Pack a checkpoint (golfpack, or Parameter Golf .pt/.ptz/safetensors) into one artifact under the budget."""
    opts = PackOptions.from_options(codec_list, embed_format=kw.pop("embed_format"), budget_bytes=budget_bytes,
                                    matrix_format=kw.pop("matrix_format"), control_format=kw.pop("control_format"),
                                    scale_method=scale_method)
    budget_given = ctx.get_parameter_source("budget_bytes") == click.core.ParameterSource.COMMANDLINE   # fills it
    menu_kw = {"menu": tuple(f.strip() for f in menu.split(",") if f.strip())} if menu else {}
    req = PackRequest(out=out, options=opts, calib=CalibConfig(calib_data, calib_tokens, joint_tokens),
                      planner=PlannerConfig(sensitivity=sensitivity, max_measured_seconds=calib_seconds, **menu_kw),
                      plan=read_plan(plan_file) if plan_file else None,
                      fill=fill if fill is not None else plan_file is None and budget_given, route=route_from(kw),
                      tokenizer=Tokenizer.load(tokenizer) if tokenizer else None, plan_out=plan_out,
                      extra_inputs=tuple(p for p in (tokenizer, plan_file) if p), force=force, device=device)
    rep = pack_report(pack_file(checkpoint, pgolf_from(kw), req), out)
    emit(rep, as_json, format_pack(rep))


@main.command()
@click.argument("artifact", type=PATH)
@opt("-o", "--out", type=PATH, required=True, help="Checkpoint stem: writes STEM.safetensors, STEM.json.")
@writes
def unpack(artifact, out, as_json, force):
    """Write an artifact's dequantized weights as a golfpack checkpoint (safetensors + JSON), as verify runs them."""
    rep = unpack_job(artifact, out, force)
    emit(rep, as_json, format_unpack(rep))


# --- audit and verify ----------------------------------------------------------------------------------------
@main.command()
@click.argument("artifact", type=PATH)
@opt("--code", "code_files", type=PATH, multiple=True, help="Count these files (as shipped) instead of golfpack's "
                                                             "runtime modules.")
@opt("--budget-bytes", default=DEFAULT_BUDGET, help="The cap on artifact + counted code bytes (decimal).")
@opt("--plot", type=PATH, help="Write the budget breakdown as a PNG chart.")
@writes
def audit(artifact, code_files, budget_bytes, plot, as_json, force):
    """Where every byte of an artifact went, and the headroom under the budget (exit 6 when over it)."""
    rep = audit_file(artifact, list(code_files), budget_bytes, plot, force)
    emit(rep, as_json, format_audit(rep))
    fail_over_budget(rep)


@main.command()
@click.argument("artifact", type=PATH)
@data_options
@opt("--reference", type=PATH, multiple=True, help="A checkpoint to compare with (repeatable).")
@opt("--batch-size", default=32, help="Windows per forward pass.")
@opt("--seq-len", type=int, help="Evaluation context (Parameter Golf models: 1024; recurrent cores: their own).")
@opt("--sliding-window", "stride", type=int, metavar="STRIDE", help="Windows of seq-len advanced by STRIDE.")
@opt("--policy", default="embedded", metavar="POLICY", help="embedded (the artifact's routing rule) | uniform-K | "
                                                            "uniform-K+1 | a signal name (calibrated on --data's "
                                                            "*_train_* shards at the embedded fraction).")
@opt("--max-tokens", type=int, help="A quick partial verify: the first N scored tokens (labelled partial).")
@device_option
@pgolf_options
@json_option
def verify(artifact, data, tokenizer, reference, batch_size, seq_len, stride, policy, max_tokens, device, as_json,
           **kw):
    """Unpack an artifact (or take a checkpoint as it is), rerun it, and report the loss and bits per byte.
    Under torchrun, one process per GPU (NCCL) or CPU core (gloo) shares the windows; rank 0 prints."""
    rep = verify_job(VerifyRequest(artifact, tuple(data), tokenizer, tuple(reference), batch_size, seq_len, stride,
                                   pgolf_from(kw), policy, progress=not as_json, max_tokens=max_tokens, device=device))
    if read_dist_env().rank == 0:
        emit(rep, as_json, format_verify(rep))


# --- data, submission, experiment, demo ----------------------------------------------------------------------
@main.command()
@click.argument("text", type=PATH, nargs=-1)
@opt("--tokenizer", type=PATH, required=True, help="SentencePiece model, e.g. fineweb_1024_bpe.model.")
@opt("--out", type=PATH, required=True, help="Output folder for the shards.")
@opt("--name", default="text", help="Shard name prefix: NAME_SPLIT_000000.bin.")
@opt("--split", default="val", help="The split the shards are named for (train or val).")
@opt("--default-corpus", is_flag=True, help="Also the embedded corpus: its fixed train or val split.")
@writes
def data(text, tokenizer, out, name, split, default_corpus, as_json, force):
    """Encode text (.txt, .raw, .jsonl[.gz] with a text field, folders) into Parameter Golf token shards."""
    rep = data_job(list(text), tokenizer, out, name, split, default_corpus, progress=not as_json, force=force)
    emit(rep, as_json, f"wrote {len(rep['shards'])} shard(s), {rep['tokens']:,} tokens: {', '.join(rep['shards'])}")


@main.command("export-submission")
@click.argument("artifact", type=PATH)
@opt("-o", "--out", type=PATH, required=True, help="Output folder.")
@opt("--budget-bytes", default=DEFAULT_BUDGET, help="The cap on script + artifact bytes (decimal).")
@writes
def export_submission(artifact, out, budget_bytes, as_json, force):
    """A self-contained submission: one self-extracting submission.py plus the artifact, in OUT."""
    rep = export_job(artifact, out, budget_bytes, force)
    emit(rep, as_json, format_export(rep))
    fail_over_budget(rep)


@main.command()
@click.argument("artifact", type=PATH)
@data_options
@opt("--calib-data", type=PATH, help="Training shards calibrating every threshold (default: --data's *_train_*).")
@opt("--fractions", default="0.1,0.25,0.5", help="Comma-separated target fractions.")
@opt("--signals", help="Comma-separated signals (default: all, oracles included).")
@opt("--calib-tokens", default=65_536, help="Training tokens calibrating the thresholds.")
@opt("--time-tokens", default=8_192, help="Validation tokens of the timed sparse runs (0: no timing).")
@opt("--time-repeats", default=5, help="Paired timing blocks per policy.")
@opt("--threads", default=1, help="Fixed torch thread count.")
@opt("--bootstrap", "n_boot", default=2000, help="Bootstrap resamples of the paired intervals.")
@opt("--plot", type=PATH, help="Write bpb vs time per token (PNG).")
@writes
def experiment(artifact, data, tokenizer, calib_data, fractions, signals, calib_tokens, time_tokens, time_repeats,
               threads, n_boot, plot, as_json, force):
    """Does adaptive depth pay? Every routing policy on the full validation split, against uniform depth."""
    opts = ExperimentOptions.from_options(fractions, signals, calib_tokens=calib_tokens, time_tokens=time_tokens,
                                          time_repeats=time_repeats, threads=threads, n_boot=n_boot)
    rep = run_experiment(artifact, list(data), tokenizer, opts, calib_data, not as_json, plot, force)
    emit(rep, as_json, format_experiment(rep))


@main.command()
@opt("--out", type=PATH, default=Path("runs/demo"), help="Folder for everything the demo makes.")
@opt("--train-seconds", default=180.0, help="Training time budget.")
@opt("--threads", type=int, help="torch threads for training (default: torch's choice; 1 on a busy machine).")
@json_option
def demo(out, train_seconds, threads, as_json):
    """Embedded corpus -> tokenizer -> shards -> train -> pack -> audit -> verify, then a summary."""
    step = click.echo
    Path(out).mkdir(parents=True, exist_ok=True)
    step(f"[1/5] corpus, tokenizer and shards in {out}", err=True)
    bundle = prepare_default_data(out)
    step(f"[2/5] training for {train_seconds:.0f} s", err=True)
    trained = run_train(out, bundle.tokenizer_path, out, ModelConfig(),
                        TrainConfig(train_seconds=train_seconds, two_exit=True, threads=threads), name="pydocs_recurrent")
    artifact = Path(out) / "pydocs_recurrent.gpk"
    step(f"[3/5] packing {artifact} (routing rule calibrated on the checkpoint's held-out training tokens)", err=True)
    packed = pack_job(load_source(trained.checkpoint), PackRequest(out=artifact))
    step("[4/5] audit", err=True)
    audit_rep = audit_file(artifact, None, packed.budget_bytes)
    step("[5/5] verify", err=True)
    ver = verify_job(VerifyRequest(artifact, (Path(out),), bundle.tokenizer_path, (trained.checkpoint,),
                                   progress=not as_json))
    summary = demo_summary(train_report(trained), audit_rep, ver)
    emit({"summary": summary, "audit": audit_rep, "verify": ver}, as_json,
         "\n\n".join([format_audit(audit_rep), format_verify(ver), format_demo_summary(summary)]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
