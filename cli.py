"""golfpack's command line: parses options into config dataclasses and calls one job function per command.

Maps golfpack errors to exit codes and one-line messages (tracebacks only with --debug). `--json` prints a
single JSON document on stdout; progress and logs go to stderr. No logic of its own beyond wiring.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from packer.errors import GolfpackError

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
        click.option("--batch-size", default=16, show_default=True),
        click.option("--lr", default=3e-3, show_default=True),
        click.option("--seed", default=0, show_default=True),
        click.option("--eval-every", default=100, show_default=True),
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
    if seconds is None and kw["steps"] is None:
        seconds = 180.0
    tc = TrainConfig(steps=kw["steps"], train_seconds=seconds, batch_size=kw["batch_size"], lr=kw["lr"],
                     seed=kw["seed"], eval_every=kw["eval_every"])
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
    rep = {"checkpoint": str(res.checkpoint), "steps": res.steps, "seconds": res.seconds,
           "tokens_seen": res.tokens_seen, "params": res.params, "val_loss": res.val_loss, "val_bpb": res.val_bpb}
    emit(rep, as_json, f"checkpoint {res.checkpoint}: {res.params:,} params, {res.steps} steps in "
                       f"{res.seconds:.0f} s, val bpb {res.val_bpb:.4f}")


# --- pack ----------------------------------------------------------------------------------------------------
@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Artifact path (.gpk).")
@click.option("--budget-bytes", default=DEFAULT_BUDGET, show_default=True,
              help="Cap on artifact + counted code bytes (decimal).")
@click.option("--embed-format", default="int8_row", show_default=True)
@click.option("--matrix-format", default="int6_row", show_default=True)
@click.option("--control-format", default="fp16", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def pack(checkpoint, out, budget_bytes, embed_format, matrix_format, control_format, as_json):
    """Pack a checkpoint into one artifact file under the byte budget."""
    from quant.pack import PackOptions, pack_checkpoint_file

    opts = PackOptions(embed_format=embed_format, matrix_format=matrix_format, control_format=control_format,
                       budget_bytes=budget_bytes)
    res = pack_checkpoint_file(checkpoint, out, opts)
    rep = {"artifact": str(out), "file_bytes": res.file_bytes, "code_bytes": res.code.compressed_bytes,
           "total_bytes": res.total_bytes, "budget_bytes": res.budget_bytes,
           "headroom_bytes": res.budget_bytes - res.total_bytes, "plan": res.plan}
    emit(rep, as_json, f"wrote {out}: {res.file_bytes:,} B + code {res.code.compressed_bytes:,} B = "
                       f"{res.total_bytes:,} B of {res.budget_bytes:,} B")


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
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="The checkpoint it was packed from, to report the quantization gap.")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def verify(artifact, data, tokenizer, reference, batch_size, as_json):
    """Unpack an artifact, rerun it, and report the loss and bits per byte it achieves."""
    from verify.job import verify_artifact
    from verify.report import format_verify

    rep = verify_artifact(artifact, list(data), tokenizer, reference, batch_size, progress=not as_json)
    emit(rep, as_json, format_verify(rep))


# --- demo ----------------------------------------------------------------------------------------------------
@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--train-seconds", type=float, default=180.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def demo(out, train_seconds, as_json):
    """Embedded corpus -> tokenizer -> shards -> train -> pack -> audit -> verify, then a summary."""
    from core.config import ModelConfig
    from core.dataset import prepare_default_data
    from core.train import TrainConfig
    from core.train_job import run_train
    from packer.audit import audit_artifact, format_audit
    from packer.code_bytes import count_code
    from packer.reader import read_artifact
    from quant.pack import PackOptions, pack_checkpoint_file
    from verify.job import verify_artifact
    from verify.report import format_demo_summary, format_verify

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda msg: click.echo(msg, err=True))
    log(f"[1/5] corpus, tokenizer and shards in {out}")
    bundle = prepare_default_data(out)
    log(f"[2/5] training for {train_seconds:.0f} s")
    trained = run_train(out, bundle.tokenizer_path, out, ModelConfig(), TrainConfig(train_seconds=train_seconds),
                        name="pydocs_recurrent")
    artifact = out / "pydocs_recurrent.gpk"
    log(f"[3/5] packing {artifact}")
    packed = pack_checkpoint_file(trained.checkpoint, artifact, PackOptions())
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
               "unigram_bpb": ver["unigram_bpb"], "val_tokens": ver["tokens"], "val_bytes": ver["bytes"]}
    emit({"summary": summary, "audit": audit_rep, "verify": ver}, as_json, format_demo_summary(summary))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
