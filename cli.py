"""golfpack's command line: parses options into config dataclasses and calls one job function per command.

Maps golfpack errors to exit codes and one-line messages (tracebacks only with --debug). `--json` prints a
single JSON document on stdout; progress and logs go to stderr. No logic of its own beyond wiring.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from packer.errors import GolfpackError, UsageError

DEFAULT_BUDGET = 16_000_000


class GolfpackGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GolfpackError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"golfpack: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def emit(report: dict, as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        click.echo(text)


@click.group(cls=GolfpackGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Pack a compact recurrent language model into a byte budget, audit it, verify what it scores."""
    ctx.obj = {"debug": debug}


# --- train ---------------------------------------------------------------------------------------------------
def model_options(f):
    for opt in reversed([
        click.option("--vocab-size", type=int, default=None, help="Default: the tokenizer's size."),
        click.option("--d-model", default=128, show_default=True),
        click.option("--n-heads", default=4, show_default=True),
        click.option("--n-kv-heads", default=2, show_default=True),
        click.option("--mlp-mult", default=2, show_default=True),
        click.option("--passes", "n_passes", default=3, show_default=True, help="K: block passes."),
        click.option("--blocks", "n_blocks", default=1, show_default=True,
                     help="Distinct blocks (1 = recurrent core; = passes for a static transformer)."),
        click.option("--seq-len", default=128, show_default=True),
    ]):
        f = opt(f)
    return f


def train_options(f):
    for opt in reversed([
        click.option("--train-seconds", type=float, default=None, help="Time budget (default 180 s)."),
        click.option("--steps", type=int, default=None, help="Step count instead of a time budget."),
        click.option("--max-wallclock-seconds", type=float, default=None,
                     help="Hard cap on training wall-clock time (with --steps, or alone)."),
        click.option("--batch-size", type=int, default=None,
                     help="Sequences per step over all ranks (default 16)."),
        click.option("--batch-tokens", type=int, default=None,
                     help="Tokens per step over all ranks, instead of --batch-size (same result for any N)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True,
                     help="auto: the local rank's GPU when CUDA is present, else the CPU."),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile the training step (GPU)."),
        click.option("--lr", default=3e-3, show_default=True),
        click.option("--seed", default=0, show_default=True),
        click.option("--eval-every", default=100, show_default=True),
        click.option("--two-exit", is_flag=True,
                     help="Train both routing exits: loss = mean of the pass-K and pass-K+1 losses."),
        click.option("--holdout-tokens", type=int, default=65_537, show_default=True,
                     help="Never train on the training shards' last N tokens: pack calibrates the routing "
                          "rule (its --route-calib-tokens + 1) and the quantization there. 0 holds none out."),
    ]):
        f = opt(f)
    return f


def build_configs(kw: dict):
    from core.config import ModelConfig
    from core.train import TrainConfig

    mc = ModelConfig(vocab_size=kw["vocab_size"], d_model=kw["d_model"], n_heads=kw["n_heads"], n_kv_heads=kw["n_kv_heads"],
                     mlp_mult=kw["mlp_mult"], n_passes=kw["n_passes"], n_blocks=kw["n_blocks"],
                     seq_len=kw["seq_len"])
    seconds = kw["train_seconds"]
    if seconds is None and kw["steps"] is None and kw["max_wallclock_seconds"] is None:
        seconds = 180.0
    if kw["batch_size"] is not None and kw["batch_tokens"] is not None:
        raise UsageError("give --batch-size or --batch-tokens, not both")
    tc = TrainConfig(steps=kw["steps"], train_seconds=seconds, batch_size=kw["batch_size"] or 16, lr=kw["lr"],
                     seed=kw["seed"], eval_every=kw["eval_every"], batch_tokens=kw["batch_tokens"],
                     max_wallclock_seconds=kw["max_wallclock_seconds"], device=kw["device"],
                     compile=kw["compile_"], two_exit=kw["two_exit"], holdout_tokens=kw["holdout_tokens"])
    return mc, tc


@main.command()
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Folder with *_train_*.bin and *_val_*.bin shards.")
@click.option("--tokenizer", type=click.Path(path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--name", default="model", show_default=True, help="Checkpoint file stem.")
@model_options
@train_options
@click.option("--json", "as_json", is_flag=True)
def train(data, tokenizer, out, name, as_json, **kw):
    """Train a recurrent core on token shards; save safetensors + JSON config."""
    from core.tokenizer import Tokenizer
    from core.train_job import run_train

    if kw["vocab_size"] is None:
        kw["vocab_size"] = Tokenizer.load(tokenizer).vocab_size
    mc, tc = build_configs(kw)
    res = run_train(data, tokenizer, out, mc, tc, name=name)
    if res.rank != 0:  # under torchrun only rank 0 reports
        return
    rep = {"checkpoint": str(res.checkpoint), "steps": res.steps, "seconds": res.seconds,
           "tokens_seen": res.tokens_seen, "params": res.params, "val_loss": res.val_loss, "val_bpb": res.val_bpb,
           "world_size": res.world_size, "device": res.device}
    emit(rep, as_json, f"checkpoint {res.checkpoint}: {res.params:,} params, {res.steps} steps in "
                       f"{res.seconds:.0f} s, val bpb {res.val_bpb:.4f}")


# --- Parameter Golf checkpoints -----------------------------------------------------------------------------
def pgolf_options(f):
    """What a Parameter Golf state_dict's shapes cannot tell (recorded in the artifact / checkpoint)."""
    for opt in reversed([
        click.option("--mlp-power", type=int, default=None,
                     help="Parameter Golf MLP activation relu^p (default 2; nolanvild's checkpoint uses 3)."),
        click.option("--rope-base", type=float, default=None, help="Parameter Golf RoPE base (default 10000)."),
        click.option("--softcap", type=float, default=None, help="Parameter Golf logit softcap (default 30)."),
    ]):
        f = opt(f)
    return f


def pgolf_from(kw: dict):
    from core.sources import PGolfOptions

    return PGolfOptions(mlp_power=kw.pop("mlp_power", None), rope_base=kw.pop("rope_base", None),
                        softcap=kw.pop("softcap", None))


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
              help="Checkpoint stem: writes STEM.safetensors and STEM.json.")
@click.option("--tokenizer", type=click.Path(path_type=Path), required=True,
              help="The SentencePiece model the checkpoint was trained with (its sha256 is recorded).")
@pgolf_options
@click.option("--json", "as_json", is_flag=True)
def ingest(checkpoint, out, tokenizer, as_json, **kw):
    """Read a Parameter Golf checkpoint (.pt, .ptz, safetensors) into a golfpack checkpoint (family pgolf)."""
    from core.sources import ingest_to_checkpoint
    from core.tokenizer import Tokenizer

    tok = Tokenizer.load(tokenizer)
    src, st_path, js_path = ingest_to_checkpoint(checkpoint, out, tok, pgolf_from(kw))
    params = sum(t.numel() for t in src.tensors.values())
    rep = {"checkpoint": str(st_path), "config": str(js_path), "family": "pgolf",
           "model": src.config.to_dict(), "params": params, "source": src.provenance,
           "tokenizer_sha256": tok.sha256}
    emit(rep, as_json, f"wrote {st_path} + {js_path.name}: Parameter Golf GPT, {params:,} params, "
                       f"{src.config.num_layers} layers x d={src.config.model_dim}, relu^{src.config.mlp_power}, "
                       f"from {src.provenance['format']} {checkpoint}")


# --- pack ----------------------------------------------------------------------------------------------------
def codec_options(names: list[str]) -> dict:
    """PackOptions fields for `--codecs A,B,...`: the first is `codec`, the rest `extra_codecs`."""
    if not names:
        raise UsageError("--codecs needs at least one codec name")
    return {"codec": names[0], "extra_codecs": tuple(names[1:])}


def route_options(f):
    """The routing rule pack calibrates (on --calib-data's TRAINING shards, after quantization)."""
    for opt in reversed([
        click.option("--route-fraction", type=float, default=0.25, show_default=True,
                     help="Target fraction of positions that get the extra pass."),
        click.option("--route-signal", default="auto", show_default=True,
                     help="auto (the legal signal capturing most of the oracle's gain on the calibration "
                          "tokens), a signal name, or none (uniform depth)."),
        click.option("--route-cap", default="auto", show_default=True,
                     help="Hard cap on the fraction (causal token bucket): auto = fraction + 0.05, a number, "
                          "or none (no bucket)."),
        click.option("--route-calib-tokens", type=int, default=65_536, show_default=True,
                     help="Training tokens (the end of the calibration shards) that calibrate the rule."),
    ]):
        f = opt(f)
    return f


def route_from(kw: dict, checkpoint, calib_data):
    """pack's route calibrator from the routing options (popped from kw), or None for uniform depth."""
    fraction, signal = kw.pop("route_fraction"), kw.pop("route_signal")
    cap, n_tokens = kw.pop("route_cap"), kw.pop("route_calib_tokens")
    if checkpoint is None or signal == "none":
        return None
    from core.route_calibrate import RouteOptions
    from core.shards import load_tokens
    from quant.calibrate import default_calib_data, train_shards
    from verify.adaptive import routing_calibrator

    data = calib_data if calib_data is not None else default_calib_data(Path(checkpoint))
    if data is None:
        click.echo("golfpack: pack: no calibration shards (--calib-data), so no routing rule: uniform depth",
                   err=True)
        return None
    try:
        cap_value = None if cap in ("auto", "none") else float(cap)
    except ValueError:
        raise UsageError(f"--route-cap {cap!r}: give auto, none or a number in [fraction, 1]") from None
    opts = RouteOptions(fraction=fraction, signal=signal, cap=cap_value, no_cap=cap == "none",
                        calib_tokens=n_tokens)
    return routing_calibrator(load_tokens(train_shards(Path(data))), opts)


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Artifact path (.gpk).")
@click.option("--budget-bytes", default=DEFAULT_BUDGET, show_default=True,
              help="Cap on artifact + counted code bytes (decimal).")
@click.option("--embed-format", default="int8_row", show_default=True)
@click.option("--matrix-format", default="int6_row", show_default=True)
@click.option("--control-format", default="fp16", show_default=True)
@pgolf_options
@click.option("--tokenizer", type=click.Path(path_type=Path), default=None,
              help="Parameter Golf checkpoints: the SentencePiece model to record (required for .pt/.ptz/"
                   "safetensors files, which carry none).")
@click.option("--calib-data", type=click.Path(path_type=Path), default=None,
              help="Calibration shards: a folder (only its *_train_*.bin files are read) or one *_train_* "
                   "shard. Default: the checkpoint's folder when it holds training shards.")
@click.option("--calib-tokens", type=int, default=8192, show_default=True,
              help="Training tokens for GPTQ Hessians and the planner's sensitivities.")
@click.option("--joint-tokens", type=int, default=65_536, show_default=True,
              help="Training tokens on which the planner measures the joint loss of whole candidate plans "
                   "(about ten evaluations per budget); 0 uses the --calib-tokens set.")
@click.option("--sensitivity", default="auto", show_default=True, type=click.Choice(["auto", "measured", "hessian"]),
              help="How the planner predicts each option's loss: measured (one calibration evaluation per "
                   "option), hessian (a Hessian-error slope from 2-3 probes per tensor), or auto.")
@click.option("--calib-seconds", type=float, default=None,
              help="auto: measure every option only if the estimated time (options x one timed evaluation) "
                   "fits these seconds, else use the Hessian proxy (default: no time limit; at most 300 "
                   "measured options).")
@click.option("--fill/--no-fill", default=None,
              help="Let the planner choose formats to fill the budget (default: yes when --budget-bytes is "
                   "given; otherwise the default plan, and the planner only if that plan does not fit).")
@click.option("--plan", "plan_file", type=click.Path(path_type=Path), default=None,
              help="An explicit per-tensor plan (JSON: {\"tensors\": {name: format | {format, scale}}}, as "
                   "--plan-out writes); tensors it does not name get the default plan.")
@click.option("--plan-out", type=click.Path(path_type=Path), default=None,
              help="Write the chosen plan (formats, scale methods, bytes, predicted loss) as JSON.")
@click.option("--scale-method", default="best", show_default=True,
              type=click.Choice(["best", "absmax", "clip_search", "sdclip", "gptq"]),
              help="How integer scales are chosen; best = least (Hessian-weighted) error per tensor.")
@click.option("--codecs", "codec_list", default="zstd,ans,brotli-shuffle", show_default=True,
              help="Codecs tried for every section (the smallest wins; raw if none is smaller).")
@click.option("--formats", "menu", default=None,
              help="Comma-separated formats the planner may choose for matrices (default: quant.planner."
                   "DEFAULT_MENU).")
@route_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def pack(ctx, checkpoint, out, budget_bytes, embed_format, matrix_format, control_format, tokenizer, calib_data,
         calib_tokens, joint_tokens, sensitivity, calib_seconds, fill, plan_file, plan_out, scale_method, codec_list,
         menu, as_json, **kw):
    """Pack a checkpoint (golfpack, or Parameter Golf .pt/.ptz/safetensors) into one artifact file under the
    byte budget."""
    from core.sources import checkpoint_family
    from packer.atomic import refuse_same_path
    from quant.calibrate import CalibConfig
    from quant.pack import PackOptions, pack_checkpoint_file
    from quant.planner import PlannerConfig, read_plan

    refuse_same_path(out, [checkpoint, tokenizer, plan_file])   # every input file, before any work
    opts = PackOptions(embed_format=embed_format, matrix_format=matrix_format, control_format=control_format,
                       budget_bytes=budget_bytes, scale_method=scale_method,
                       **codec_options([c.strip() for c in codec_list.split(",") if c.strip()]))
    if plan_file is not None and fill:
        raise UsageError("--plan gives the formats, so the planner does not choose them: drop --fill (and "
                         "--budget-bytes still caps the result)")
    if fill is None:
        fill = plan_file is None and ctx.get_parameter_source("budget_bytes") == click.core.ParameterSource.COMMANDLINE
    planner = PlannerConfig(sensitivity=sensitivity, max_measured_seconds=calib_seconds,
                            **({"menu": tuple(f.strip() for f in menu.split(",") if f.strip())} if menu else {}))
    plan = read_plan(plan_file) if plan_file is not None else None
    calib = CalibConfig(data=calib_data, tokens=calib_tokens, joint_tokens=joint_tokens)
    if checkpoint_family(checkpoint) == "recurrent":
        if tokenizer is not None or pgolf_from(kw).given():
            raise UsageError(f"{checkpoint} is a recurrent golfpack checkpoint: --tokenizer, --mlp-power, "
                             f"--rope-base and --softcap apply to Parameter Golf checkpoints only")
        route = route_from(kw, checkpoint, calib_data)
        res = pack_checkpoint_file(checkpoint, out, opts, route, calib=calib, plan=plan, fill=fill, planner=planner)
    else:
        route_from(kw, None, None)   # pops the routing options: Parameter Golf models keep uniform depth
        from core.tokenizer import Tokenizer
        from quant.pack_foreign import pack_pgolf_file

        tok = Tokenizer.load(tokenizer) if tokenizer is not None else None
        res, _ = pack_pgolf_file(checkpoint, out, opts, pgolf_from(kw), tok, calib=calib, plan=plan, fill=fill,
                                 planner=planner)
    rep = {"artifact": str(out), "file_bytes": res.file_bytes, "code_bytes": res.code.compressed_bytes,
           "total_bytes": res.total_bytes, "budget_bytes": res.budget_bytes,
           "headroom_bytes": res.budget_bytes - res.total_bytes, "plan": res.plan, "scales": res.scales,
           "aliases": res.aliases, "planning": {k: v for k, v in res.report.items() if k != "plan"}}
    if plan_out is not None:
        from packer.atomic import write_bytes_atomic

        refuse_same_path(plan_out, [checkpoint, tokenizer, out])
        write_bytes_atomic(plan_out, (json.dumps(res.report.get("plan", {}), indent=2, sort_keys=True)
                                      + "\n").encode())
    how = res.report.get("mode", "default")
    from packer.audit import format_routing
    from packer.reader import parse_artifact

    rep["routing"] = parse_artifact(res.data).manifest["routing"]
    emit(rep, as_json, f"wrote {out}: {res.file_bytes:,} B + code {res.code.compressed_bytes:,} B = "
                       f"{res.total_bytes:,} B of {res.budget_bytes:,} B ({how} plan)"
                       + "\n".join(format_routing(rep["routing"])))


# --- audit ---------------------------------------------------------------------------------------------------
@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--code", "code_files", type=click.Path(path_type=Path), multiple=True,
              help="Count these code files instead of golfpack's runtime modules.")
@click.option("--budget-bytes", default=DEFAULT_BUDGET, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def audit(artifact, code_files, budget_bytes, as_json):
    """Where every byte of an artifact went, and the headroom under the budget."""
    from packer.audit import audit_artifact, format_audit
    from packer.code_bytes import count_code
    from packer.reader import read_artifact

    art = read_artifact(artifact)
    rep = audit_artifact(art, count_code(list(code_files) or None), budget_bytes)
    emit(rep, as_json, format_audit(rep))


# --- verify --------------------------------------------------------------------------------------------------
@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), multiple=True, required=True,
              help="Shard file, folder of shards (*_val_*.bin), or text files.")
@click.option("--tokenizer", type=click.Path(path_type=Path), required=True)
@click.option("--reference", type=click.Path(path_type=Path), multiple=True,
              help="A checkpoint to compare with (repeatable): the one it was packed from, the original .ptz.")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--seq-len", type=int, default=None,
              help="Evaluation context (Parameter Golf models: default 1024; recurrent cores: their own).")
@click.option("--sliding-window", "stride", type=int, default=None, metavar="STRIDE",
              help="Sliding-window evaluation: windows of seq-len advanced by STRIDE, every token scored once.")
@click.option("--policy", default="embedded", show_default=True, metavar="POLICY",
              help="embedded (the artifact's routing rule) | uniform-K | uniform-K+1 | a signal name (calibrated "
                   "on --data's *_train_* shards at the embedded rule's fraction).")
@pgolf_options
@click.option("--json", "as_json", is_flag=True)
def verify(artifact, data, tokenizer, reference, batch_size, seq_len, stride, policy, as_json, **kw):
    """Unpack an artifact (or take a checkpoint as it is), rerun it, and report the loss and bits per byte."""
    from verify.job import verify_artifact
    from verify.report import format_verify

    rep = verify_artifact(artifact, list(data), tokenizer, list(reference), batch_size, progress=not as_json,
                          seq_len=seq_len, stride=stride, pgolf=pgolf_from(kw), policy=policy)
    emit(rep, as_json, format_verify(rep))


# --- data and submission -------------------------------------------------------------------------------------
@main.command()
@click.argument("text", type=click.Path(path_type=Path), nargs=-1)
@click.option("--tokenizer", type=click.Path(path_type=Path), required=True,
              help="SentencePiece model, e.g. Parameter Golf's fineweb_1024_bpe.model.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder for the shards.")
@click.option("--name", default="text", show_default=True, help="Shard name prefix: NAME_SPLIT_000000.bin.")
@click.option("--split", default="val", show_default=True)
@click.option("--default-corpus", is_flag=True,
              help="Also the embedded Python-docs corpus: its fixed train or val split (per --split).")
@click.option("--json", "as_json", is_flag=True)
def data(text, tokenizer, out, name, split, default_corpus, as_json):
    """Encode text (.txt, .raw, .jsonl[.gz] with a text field, folders) into Parameter Golf token shards."""
    from core.corpus import default_corpus as embedded
    from core.corpus import split_documents
    from core.dataset import VAL_FRACTION, prepare_text_data
    from core.shards import read_shard

    docs = None
    if default_corpus:
        if split not in ("train", "val"):
            raise UsageError(f"--default-corpus has a train and a val split; --split {split!r} is neither")
        train_docs, val_docs = split_documents(embedded(), VAL_FRACTION)
        docs = train_docs if split == "train" else val_docs
    if not text and not default_corpus:
        raise UsageError("give text files or folders, or --default-corpus")
    shards = prepare_text_data(list(text), tokenizer, out, name, split, progress=not as_json, documents=docs)
    tokens = sum(len(read_shard(p)) for p in shards)
    rep = {"shards": [str(p) for p in shards], "tokens": tokens, "split": split}
    emit(rep, as_json, f"wrote {len(shards)} shard(s), {tokens:,} tokens: {', '.join(str(p) for p in shards)}")


@main.command("export-submission")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--budget-bytes", default=DEFAULT_BUDGET, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def export_submission(artifact, out, budget_bytes, as_json):
    """A self-contained submission: one self-extracting submission.py plus the artifact, in OUT."""
    from verify.submission import export_submission as export

    res = export(artifact, out)
    total = res.code.compressed_bytes + res.artifact_bytes
    rep = {"script": str(res.script), "artifact": str(res.artifact), "code_bytes": res.code.compressed_bytes,
           "code_method": res.code.method, "artifact_bytes": res.artifact_bytes, "total_bytes": total,
           "budget_bytes": budget_bytes, "headroom_bytes": budget_bytes - total, "modules": list(res.modules),
           "requires": list(res.requires), "optional": list(res.optional)}
    emit(rep, as_json, f"wrote {res.script} ({res.code.compressed_bytes:,} B of code, {len(res.modules)} modules "
                       f"bundled) + {res.artifact} ({res.artifact_bytes:,} B) = {total:,} B of {budget_bytes:,} B"
                       f"\nrequires: {', '.join(res.requires)} (only on some paths: "
                       f"{', '.join(res.optional) or 'none'})\nrun: python {res.script} --data "
                       f"FOLDER_OF_VAL_SHARDS --tokenizer fineweb_1024_bpe.model")


# --- experiment ----------------------------------------------------------------------------------------------
@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), multiple=True, required=True,
              help="Folder of shards (*_val_*.bin scored; its *_train_*.bin calibrate), a shard file, or text.")
@click.option("--tokenizer", type=click.Path(path_type=Path), required=True)
@click.option("--calib-data", type=click.Path(path_type=Path), default=None,
              help="Training shards that calibrate every threshold (default: the *_train_* shards of --data).")
@click.option("--fractions", default="0.1,0.25,0.5", show_default=True, help="Comma-separated target fractions.")
@click.option("--signals", default=None, help="Comma-separated signals (default: all, oracles included).")
@click.option("--calib-tokens", type=int, default=65_536, show_default=True)
@click.option("--time-tokens", type=int, default=8_192, show_default=True,
              help="Validation tokens of the timed sparse runs (0: no timing).")
@click.option("--time-repeats", type=int, default=5, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="Fixed torch thread count.")
@click.option("--bootstrap", "n_boot", type=int, default=2000, show_default=True)
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="Write bpb vs time per token (PNG).")
@click.option("--json", "as_json", is_flag=True)
def experiment(artifact, data, tokenizer, calib_data, fractions, signals, calib_tokens, time_tokens, time_repeats,
               threads, n_boot, plot, as_json):
    """Does adaptive depth pay? Every routing policy on the full validation split, against uniform depth."""
    from verify.experiment import ExperimentOptions, run_experiment
    from verify.report import format_experiment

    try:
        fr = tuple(float(f) for f in fractions.split(",") if f.strip())
    except ValueError:
        raise UsageError(f"--fractions {fractions!r}: give comma-separated numbers in (0, 1)") from None
    kw = {"signals": tuple(x.strip() for x in signals.split(",") if x.strip())} if signals else {}
    opts = ExperimentOptions(fractions=fr, calib_tokens=calib_tokens, time_tokens=time_tokens,
                             time_repeats=time_repeats, threads=threads, n_boot=n_boot, **kw)
    rep = run_experiment(artifact, list(data), tokenizer, opts, calib_data, progress=not as_json)
    if plot is not None:
        from verify.plot import plot_experiment

        rep["meta"]["plot"] = str(plot_experiment(rep, plot))
    emit(rep, as_json, format_experiment(rep))


# --- demo ----------------------------------------------------------------------------------------------------
@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--train-seconds", type=float, default=180.0, show_default=True)
@click.option("--threads", type=int, default=None,
              help="torch threads for training (default: torch's choice; 1 is faster on a busy machine).")
@click.option("--json", "as_json", is_flag=True)
def demo(out, train_seconds, threads, as_json):
    """Embedded corpus -> tokenizer -> shards -> train -> pack -> audit -> verify, then a summary."""
    from core.config import ModelConfig
    from core.dataset import prepare_default_data
    from core.route_calibrate import RouteOptions
    from core.shards import find_shards, load_tokens
    from core.train import TrainConfig
    from core.train_job import run_train
    from packer.audit import audit_artifact, format_audit
    from packer.code_bytes import count_code
    from packer.reader import read_artifact
    from quant.pack import PackOptions, pack_checkpoint_file
    from verify.adaptive import routing_calibrator
    from verify.job import verify_artifact
    from verify.report import format_demo_summary, format_verify

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda msg: click.echo(msg, err=True))
    log(f"[1/5] corpus, tokenizer and shards in {out}")
    bundle = prepare_default_data(out)
    log(f"[2/5] training for {train_seconds:.0f} s")
    trained = run_train(out, bundle.tokenizer_path, out, ModelConfig(),
                        TrainConfig(train_seconds=train_seconds, two_exit=True, threads=threads), name="pydocs_recurrent")
    artifact = out / "pydocs_recurrent.gpk"
    log(f"[3/5] packing {artifact} (routing rule calibrated on the training shards)")
    route = routing_calibrator(load_tokens(find_shards(out, "train")), RouteOptions())
    packed = pack_checkpoint_file(trained.checkpoint, artifact, PackOptions(), route)
    log("[4/5] audit")
    audit_rep = audit_artifact(read_artifact(artifact), count_code(), packed.budget_bytes)
    if not as_json:
        click.echo(format_audit(audit_rep))
    log("[5/5] verify")
    ver = verify_artifact(artifact, [out], bundle.tokenizer_path, trained.checkpoint, progress=not as_json)
    if not as_json:
        click.echo(format_verify(ver))
    summary = {"params": trained.params, "train_steps": trained.steps, "train_seconds": trained.seconds,
               "artifact": str(artifact), "artifact_bytes": audit_rep["file_bytes"],
               "total_bytes": audit_rep["total_bytes"], "fp_bpb": ver["reference"]["val_bpb"],
               "artifact_bpb": ver["val_bpb"], "gap_bpb": ver["quantization_gap_bpb"],
               "unigram_bpb": ver["unigram_bpb"], "val_tokens": ver["tokens"], "val_bytes": ver["bytes"],
               "route_signal": ver.get("route_signal"), "route_fraction_target": ver.get("route_fraction_target"),
               "route_fraction_realized": ver.get("route_fraction_realized")}
    emit({"summary": summary, "audit": audit_rep, "verify": ver}, as_json, format_demo_summary(summary))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
