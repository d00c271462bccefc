"""Ready-to-train data folders: the default Python-docs corpus end to end, and user text encoded into shards.

Owns the pipeline corpus -> split -> tokenizer (trained on TRAIN only) -> shards, its file names, and the
JSON stamp that lets a second run reuse the files. Must not define the shard format (core/shards.py), the
tokenizer settings (core/tokenizer.py) or the corpus (core/corpus.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.atomic import ensure_folder, write_bytes_atomic
from common.errors import DataError, GolfpackError, UsageError
from core.corpus import Document, load_text_documents, split_documents
from core.corpus import default_corpus as embedded_corpus
from core.shards import check_split_outputs, encode_documents, read_shard, shard_name, write_split
from core.tokenizer import Tokenizer, train_tokenizer

STAMP_VERSION = 1
VAL_FRACTION = 0.05


@dataclass(frozen=True)
class DataBundle:
    """What prepare_default_data produced. *_bytes are UTF-8 bytes of the raw document texts; *_tokens count
    every token in the shards, one BOS per document included."""

    train_docs: int
    val_docs: int
    train_bytes: int
    val_bytes: int
    train_tokens: int
    val_tokens: int
    tokenizer_path: Path
    train_shards: list[Path]
    val_shards: list[Path]
    reused: bool = False


def _log(message: str, enabled: bool) -> None:
    if enabled:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise DataError(f"data name {name!r} must be a plain file-name prefix (non-empty, no '/', not hidden)")


def _corpus_sha256(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        for part in (d.name, d.text):
            data = part.encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


def _nbytes(docs: list[Document]) -> int:
    return sum(len(d.text.encode("utf-8")) for d in docs)


def _reuse(stamp_path: Path, expected: dict, tok_path: Path, train: Path, val: Path) -> dict | None:
    """The stamp if it matches `expected` and the files on disk match the stamp; None means rebuild."""
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(stamp, dict) or any(stamp.get(k) != v for k, v in expected.items()):
        return None
    try:
        if Tokenizer.load(tok_path).sha256 != stamp.get("tokenizer_sha256"):
            return None
        if len(read_shard(train)) != stamp.get("train_tokens") or len(read_shard(val)) != stamp.get("val_tokens"):
            return None
    except GolfpackError:
        return None
    return stamp


def prepare_default_data(out_dir: Path, name: str = "pydocs", vocab_size: int = 1024,
                         progress: bool = True) -> DataBundle:
    """Build (or reuse) `<out_dir>/<name>_<vocab>_bpe.model`, `<name>_train_000000.bin`, `<name>_val_000000.bin`
    from the embedded corpus; the tokenizer is trained on the train split only."""
    _check_name(name)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    docs = embedded_corpus()
    train_docs, val_docs = split_documents(docs, VAL_FRACTION)
    _log(f"corpus: {len(docs)} documents ({len(train_docs)} train, {len(val_docs)} val) "
         f"in {time.perf_counter() - t0:.1f}s", progress)
    tok_path = out_dir / f"{name}_{vocab_size}_bpe.model"
    train_path = out_dir / shard_name(name, "train", 0)
    val_path = out_dir / shard_name(name, "val", 0)
    stamp_path = out_dir / f"{name}_data.json"
    expected = {
        "stamp_version": STAMP_VERSION,
        "python": sys.version,
        "corpus_sha256": _corpus_sha256(docs),
        "val_fraction": VAL_FRACTION,
        "vocab_size": vocab_size,
        "train_docs": len(train_docs),
        "val_docs": len(val_docs),
        "train_bytes": _nbytes(train_docs),
        "val_bytes": _nbytes(val_docs),
    }
    stamp = _reuse(stamp_path, expected, tok_path, train_path, val_path)
    reused = stamp is not None
    if reused:
        _log(f"data: reusing {out_dir} (stamp {stamp_path.name} matches)", progress)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        t1 = time.perf_counter()
        train_tokenizer((d.text for d in train_docs), tok_path, vocab_size)
        tok = Tokenizer.load(tok_path)
        _log(f"tokenizer: {tok_path.name} ({tok.vocab_size} pieces) in {time.perf_counter() - t1:.1f}s", progress)
        t2 = time.perf_counter()
        train_tokens = encode_documents(train_docs, tok)
        val_tokens = encode_documents(val_docs, tok)
        # the default corpus is far below one shard's worth; anything else would break the fixed names above
        [train_path] = write_split(train_tokens, out_dir, name, "train", max(len(train_tokens), 1))
        [val_path] = write_split(val_tokens, out_dir, name, "val", max(len(val_tokens), 1))
        _log(f"shards: {len(train_tokens)} train + {len(val_tokens)} val tokens in "
             f"{time.perf_counter() - t2:.1f}s", progress)
        stamp = dict(expected, tokenizer_sha256=tok.sha256, train_tokens=len(train_tokens),
                     val_tokens=len(val_tokens))
        write_bytes_atomic(stamp_path, (json.dumps(stamp, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return DataBundle(
        train_docs=stamp["train_docs"],
        val_docs=stamp["val_docs"],
        train_bytes=stamp["train_bytes"],
        val_bytes=stamp["val_bytes"],
        train_tokens=stamp["train_tokens"],
        val_tokens=stamp["val_tokens"],
        tokenizer_path=tok_path,
        train_shards=[train_path],
        val_shards=[val_path],
        reused=reused,
    )


def prepare_text_data(paths: list[Path], tokenizer_path: Path, out_dir: Path, name: str, split: str = "val",
                      max_tokens_per_shard: int = 100_000_000, progress: bool = True,
                      documents: list[Document] | None = None) -> list[Path]:
    """Encode user text files (see core.corpus.load_text_documents), after any given `documents`, with an
    existing tokenizer into `<out_dir>/<name>_<split>_NNNNNN.bin` shards; returns the shard paths."""
    _check_name(name)
    tok = Tokenizer.load(tokenizer_path)
    t0 = time.perf_counter()
    docs = list(documents or []) + load_text_documents([Path(p) for p in paths])
    if not docs:
        raise DataError(f"no non-empty documents in {', '.join(str(p) for p in paths) or 'the given input'}")
    _log(f"text: {len(docs)} documents, {_nbytes(docs)} bytes in {time.perf_counter() - t0:.1f}s", progress)
    t1 = time.perf_counter()
    tokens = encode_documents(docs, tok)
    out_dir = Path(out_dir)
    out = write_split(tokens, out_dir, name, split, max_tokens_per_shard)
    _log(f"shards: {len(tokens)} tokens in {len(out)} file(s) under {out_dir} in "
         f"{time.perf_counter() - t1:.1f}s", progress)
    return out


def data_job(text: list[Path], tokenizer_path: Path, out_dir: Path, name: str, split: str = "val",
             default_corpus: bool = False, progress: bool = True, force: bool = False) -> dict:
    """The `data` command: text files (and, with default_corpus, the embedded corpus's train or val split)
    encoded into Parameter Golf shards; returns the report. Inputs and outputs are checked before any work."""
    for path in [*text, tokenizer_path]:
        if not Path(path).exists():
            raise UsageError(f"input {path} does not exist")
    _check_name(name)
    check_split_outputs(ensure_folder(out_dir), name, split, [*text, tokenizer_path], force)
    docs = None
    if default_corpus:
        if split not in ("train", "val"):
            raise UsageError(f"--default-corpus has a train and a val split; --split {split!r} is neither")
        train_docs, val_docs = split_documents(embedded_corpus(), VAL_FRACTION)
        docs = train_docs if split == "train" else val_docs
    if not text and not default_corpus:
        raise UsageError("give text files or folders, or --default-corpus")
    shards = prepare_text_data(list(text), tokenizer_path, out_dir, name, split, progress=progress, documents=docs)
    tokens = sum(len(read_shard(p)) for p in shards)
    return {"shards": [str(p) for p in shards], "tokens": tokens, "split": split}
