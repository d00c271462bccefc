"""The `verify` job: read an artifact, rebuild its model, score validation tokens, compare with a reference.

Data may be a shard file, a folder of shards (its `*_val_*.bin` files; `*_train_*.bin` there feed the
unigram floor), or text files encoded with the given tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.checkpoint import load_checkpoint
from core.corpus import load_text_documents
from core.model import RecurrentLM
from core.shards import encode_documents, find_shards, load_tokens
from core.tokenizer import Tokenizer
from packer.errors import DataError, UsageError
from packer.reader import read_artifact
from verify.evaluate import evaluate, unigram_bpb
from verify.load import build_model


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


def _logits_fn(model: RecurrentLM):
    return lambda x: model(x)


def verify_artifact(artifact: Path, data: list[Path], tokenizer: Path, reference: Path | None = None,
                    batch_size: int = 32, progress: bool = True) -> dict:
    art = read_artifact(Path(artifact))
    tok = Tokenizer.load(Path(tokenizer))
    want = art.manifest["tokenizer"].get("sha256")
    if want and want != tok.sha256:
        raise UsageError(f"tokenizer {tokenizer} (sha256 {tok.sha256[:12]}…) is not the one the artifact was "
                         f"packed for (sha256 {want[:12]}…); pass the matching --tokenizer")
    model = build_model(art)
    val, train, described = load_eval_tokens(data, tok)
    tables = tok.byte_tables()
    res = evaluate(_logits_fn(model), val, tables, model.cfg.seq_len, batch_size, progress)
    report = {"artifact": str(artifact), "sha256": art.sha256, "data": described,
              "routing": art.manifest["routing"], **res.summary()}
    report["unigram_bpb"] = (unigram_bpb(train, val, tables, tok.vocab_size) if train is not None else None)
    if reference is not None:
        ckpt = load_checkpoint(Path(reference))
        ref_model = RecurrentLM(ckpt.config)
        ref_model.load_state_dict(ckpt.tensors, strict=True)
        ref_model.eval()
        ref = evaluate(_logits_fn(ref_model), val, tables, ckpt.config.seq_len, batch_size, progress)
        report["reference"] = {"checkpoint": str(reference), **ref.summary()}
        report["quantization_gap_bpb"] = res.val_bpb - ref.val_bpb
    return report
