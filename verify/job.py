"""The `verify` job: read an artifact, rebuild its model, score validation tokens, compare with references.

The artifact may also be a checkpoint evaluated as it is (verify/targets.py), and so may each reference;
every row of a comparison uses the same tokens, context length and window protocol. Under torchrun (one process
per GPU with NCCL, or per CPU core with gloo) the windows are split by rank and the per-target losses all-reduced
in float64 (core/scoring.py), so every rank reports what one process would; only rank 0 prints. Data may be a shard
file, a folder of shards (its `*_val_*.bin` files, e.g. Parameter Golf's `fineweb_val_*.bin`; `*_train_*.bin`
there feed the unigram floor), or text files encoded with the given tokenizer.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.errors import DataError, UsageError
from core.corpus import load_text_documents
from core.distributed import DistContext, distributed_session
from core.shards import encode_documents, find_shards, load_tokens
from core.sources import PGolfOptions
from core.tokenizer import Tokenizer
from verify.adaptive import EMBEDDED, routing_report, runner_for_target, same_policy
from verify.checks import check_inputs_exist, loss_warning, pgolf_assumptions, reference_warnings
from verify.evaluate import evaluate, unigram_bpb
from verify.targets import EvalTarget, check_tokenizer, check_tokens, context_length, open_target


def load_eval_tokens(data: list[Path], tok: Tokenizer) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(validation tokens, training tokens or None, description) from shards or text."""
    if not data:
        raise UsageError("--data is required: a shard file, a folder of shards, or text files")
    paths = [Path(p) for p in data]
    for p in paths:
        if not p.exists():
            raise DataError(f"--data {p}: no such file or folder")
    if all(p.is_file() and p.suffix == ".bin" for p in paths):
        return load_tokens(paths), None, f"{len(paths)} shard file(s)"
    if len(paths) == 1 and paths[0].is_dir() and list(paths[0].glob("*_val_*.bin")):
        folder = paths[0]
        val = load_tokens(find_shards(folder, "val"))
        train = load_tokens(find_shards(folder, "train")) if list(folder.glob("*_train_*.bin")) else None
        return val, train, f"shards in {folder}"
    docs = load_text_documents(paths)
    return encode_documents(docs, tok), None, f"{len(docs)} text document(s)"


def _logits_fn(model):
    return lambda x: model(x)


@dataclass(frozen=True)
class VerifyRequest:
    """What to score and how: the artifact (or checkpoint), the data, the tokenizer, references to compare."""

    artifact: Path
    data: tuple[Path, ...]
    tokenizer: Path
    references: tuple[Path, ...] = ()
    batch_size: int = 32
    seq_len: int | None = None        # the context (pgolf default 1024; recurrent: its own)
    stride: int | None = None         # sliding-window scoring
    pgolf: PGolfOptions = field(default_factory=PGolfOptions)
    policy: str = EMBEDDED            # embedded | uniform-K | uniform-K+1 | a signal name (verify/adaptive.py)
    progress: bool = True
    max_tokens: int | None = None     # a quick partial verify: the first max_tokens scored tokens only
    device: str = "auto"              # auto (the local rank's GPU when CUDA is present) | cpu | cuda

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size!r}: must be a positive integer")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise UsageError(f"--max-tokens {self.max_tokens!r}: must be a positive integer")


def verify_job(req: VerifyRequest) -> dict:
    """Score the artifact (or a checkpoint) and each reference on the same tokens, context and protocol; a
    recurrent reference of the same architecture runs under the same policy. Everything that can fail cheaply
    (paths, tokenizer against every model, data against every vocabulary, context) is checked before the first
    evaluation; `warnings` lists what would make a number mislead (verify/checks.py), also said on stderr."""
    check_inputs_exist({"ARTIFACT": [req.artifact], "--data": list(req.data), "--tokenizer": [req.tokenizer],
                        "--reference": list(req.references)})
    target = open_target(Path(req.artifact), req.pgolf)
    tok = Tokenizer.load(Path(req.tokenizer))
    check_tokenizer(target, tok)
    refs = [open_target(Path(r), req.pgolf, target.config if target.family == "pgolf" else None)
            for r in req.references]
    for ref in refs:
        check_tokenizer(ref, tok)
    val, train, described = load_eval_tokens(list(req.data), tok)
    partial = req.max_tokens is not None and len(val) - 1 > req.max_tokens
    if partial:
        val = val[: req.max_tokens + 1]
        described += f" (partial: the first {req.max_tokens:,} scored tokens)"
    for t in (target, *refs):
        check_tokens(t, val)
    context = context_length(target, req.seq_len)
    ref_contexts = [context_length(ref, context) for ref in refs]
    stride = req.stride
    if stride is not None and (not isinstance(stride, int) or not 1 <= stride <= context):
        raise UsageError(f"--sliding-window {stride!r} must be a stride in 1..{context} (the context length)")
    assumed, warnings = pgolf_assumptions(target, req.pgolf, val, context)
    warnings += [w for ref in refs for w in reference_warnings(target, ref)]
    tables = tok.byte_tables()
    runner = runner_for_target(target, req.policy, train)
    with distributed_session(req.device) as dist:
        progress = req.progress and dist.is_main
        for t in (target, *refs):
            t.model.to(dist.device)
        res = evaluate(runner or _logits_fn(target.model), val, tables, context, req.batch_size, progress,
                       stride=stride, dist=dist)
        _reduce_stats(runner, dist)
        rows = [_reference_row(ref, val, tables, ctx, res, req.batch_size, progress, stride,
                               same_policy(runner, ref), dist) for ref, ctx in zip(refs, ref_contexts)]
    warnings += loss_warning(res.val_loss, target.vocab_size)
    report = {"artifact": str(req.artifact), "kind": target.kind, "family": target.family, **target.info,
              "data": described, "seq_len": context, "sliding_window_stride": stride, **res.summary(),
              **routing_report(runner, context), "pgolf_hyperparameters": assumed, "partial": partial,
              "device": str(dist.device), "processes": dist.world_size}
    report.setdefault("sha256", None)
    report["unigram_bpb"] = (unigram_bpb(train, val, tables, tok.vocab_size) if train is not None else None)
    if rows:
        report["references"] = rows
        report["reference"] = rows[0]
        report["quantization_gap_bpb"] = rows[0]["gap_bpb"]
    report["warnings"] = warnings
    for w in warnings if dist.is_main else ():
        sys.stderr.write(f"golfpack: warning: {w}\n")
    return report


def _reduce_stats(runner, dist: DistContext) -> None:
    """A routing runner's counts summed over ranks (each rank counted only its own windows)."""
    if runner is None or not dist.distributed:
        return
    st = runner.stats
    counts = torch.tensor([st.positions, st.selected, st.cap_bound], dtype=torch.int64, device=dist.device)
    st.positions, st.selected, st.cap_bound = (int(v) for v in dist.all_reduce_(counts).cpu())


def _reference_row(ref: EvalTarget, val: np.ndarray, tables, context: int, res, batch_size: int, progress: bool,
                   stride: int | None, fn=None, dist: DistContext | None = None) -> dict:
    got = evaluate(fn or _logits_fn(ref.model), val, tables, context, batch_size, progress, stride=stride,
                   dist=dist)
    return {"checkpoint": str(ref.path), "kind": ref.kind, "family": ref.family,
            **{k: v for k, v in ref.info.items() if k in ("format", "sha256")}, **got.summary(),
            "gap_bpb": res.val_bpb - got.val_bpb}
