"""Parameter Golf token shards (.bin): read, validate, write, find, and encode documents into them.

Format: a 256-entry little-endian int32 header ([0] = 20240520 magic, [1] = 1 version, [2] = token count,
the rest 0), then that many little-endian uint16 tokens; the file size must be 1024 + 2 * count. Each
document is BOS + its tokens, no EOS. Owns the format; must not train tokenizers or read raw text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.atomic import check_output, head_bytes, write_bytes_atomic
from common.errors import DataError, ShardError
from core.corpus import Document
from core.tokenizer import Tokenizer

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_BYTES = 2
MAX_TOKEN_ID = 65535


def _header(num_tokens: int) -> bytes:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, num_tokens
    return header.tobytes()


def is_shard_file(path: Path) -> bool:
    """Whether `path` starts like a Parameter Golf token shard (its header's magic and version)."""
    head = head_bytes(path, 8)
    return len(head) == 8 and tuple(np.frombuffer(head, "<i4")) == (SHARD_MAGIC, SHARD_VERSION)


def write_shard(path: Path, tokens: np.ndarray) -> None:
    """Write `tokens` (any integer array, values in [0, 65535]) as one shard, atomically."""
    path = Path(path)
    arr = np.asarray(tokens).ravel()
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"shard {path}: tokens must be integers, got dtype {arr.dtype}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > MAX_TOKEN_ID:
            bad = lo if lo < 0 else hi
            raise DataError(f"shard {path}: token id {bad} does not fit uint16 [0, {MAX_TOKEN_ID}]; "
                            "use a tokenizer with at most 65536 pieces")
    if arr.size > np.iinfo(np.int32).max:
        raise DataError(f"shard {path}: {arr.size} tokens exceed the int32 count field; split the data")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, _header(int(arr.size)) + arr.astype("<u2").tobytes())


def read_shard(path: Path) -> np.ndarray:
    """The shard's tokens as a read-only uint16 memmap, after checking magic, version and size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as exc:
        raise ShardError(f"cannot read shard {path}: {exc}") from exc
    if len(head) < HEADER_BYTES:
        raise ShardError(f"shard {path}: {size} bytes, shorter than the {HEADER_BYTES}-byte header; "
                         "the file is truncated or not a token shard")
    header = np.frombuffer(head, dtype="<i4")
    magic, version, count = int(header[0]), int(header[1]), int(header[2])
    if magic != SHARD_MAGIC:
        raise ShardError(f"shard {path}: bad magic {magic} at offset 0 (expected {SHARD_MAGIC}); "
                         "not a Parameter Golf token shard")
    if version != SHARD_VERSION:
        raise ShardError(f"shard {path}: unsupported version {version} at offset 4 (supported: "
                         f"{SHARD_VERSION})")
    if count < 0:
        raise ShardError(f"shard {path}: negative token count {count} at offset 8")
    expected = HEADER_BYTES + TOKEN_BYTES * count
    if size != expected:
        raise ShardError(f"shard {path}: file is {size} bytes but its header (offset 8) says {count} tokens, "
                         f"which needs {expected} bytes; the file is truncated or corrupt")
    if count == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def find_shards(path: Path, split: str) -> list[Path]:
    """A file -> [it]; a folder -> its `*_{split}_*.bin` files, sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such shard file or folder")
    pattern = f"*_{split}_*.bin"
    found = sorted(p for p in path.glob(pattern) if p.is_file())
    if not found:
        raise DataError(f"{path}: no shards matching {pattern}; run `golfpack data` or pass a .bin file")
    return found


def load_tokens(paths: list[Path]) -> np.ndarray:
    """All tokens of the shards, concatenated in order (uint16)."""
    if not paths:
        raise DataError("no shard files given")
    parts = [read_shard(p) for p in paths]
    return np.ascontiguousarray(parts[0]) if len(parts) == 1 else np.concatenate(parts)


def encode_documents(docs: list[Document], tok: Tokenizer) -> np.ndarray:
    """BOS + tokens for each document, concatenated (uint16). No EOS, as in Parameter Golf's shards."""
    if tok.vocab_size > MAX_TOKEN_ID + 1:
        raise DataError(f"tokenizer {tok.path} has {tok.vocab_size} pieces; shards hold at most 65536")
    if tok.bos_id < 0:
        raise DataError(f"tokenizer {tok.path} has no BOS piece; train one with bos_id=1")
    parts = [np.asarray([tok.bos_id] + tok.encode(d.text), dtype=np.uint16) for d in docs]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def shard_name(name: str, split: str, index: int) -> str:
    return f"{name}_{split}_{index:06d}.bin"


def write_split(tokens: np.ndarray, out_dir: Path, name: str, split: str,
                max_tokens_per_shard: int = 100_000_000) -> list[Path]:
    """Write `tokens` as `<name>_<split>_000000.bin`, `_000001.bin`, ... of at most max_tokens_per_shard each
    (at least one shard, even when empty). Higher-numbered shards of the same name and split left by an
    earlier, larger run are deleted, so that find_shards never mixes old and new data."""
    if max_tokens_per_shard <= 0:
        raise DataError(f"max_tokens_per_shard must be positive, got {max_tokens_per_shard}")
    if "_" in split or not split:
        raise DataError(f"split name {split!r} must be non-empty and without '_' (it is matched as *_{split}_*)")
    tokens = np.asarray(tokens).ravel()
    out_dir = Path(out_dir)
    paths = []
    starts = range(0, max(len(tokens), 1), max_tokens_per_shard)
    for index, start in enumerate(starts):
        path = out_dir / shard_name(name, split, index)
        write_shard(path, tokens[start : start + max_tokens_per_shard])
        paths.append(path)
    for stale in sorted(out_dir.glob(f"{name}_{split}_*.bin")):
        suffix = stale.name[len(f"{name}_{split}_") : -len(".bin")]
        if len(suffix) == 6 and suffix.isdigit() and int(suffix) >= len(paths) and is_shard_file(stale):
            stale.unlink()
    return paths


def check_split_outputs(out_dir: Path, name: str, split: str, inputs: list[Path], force: bool = False) -> None:
    """Before any work: the shards `write_split` would write (or replace) in `out_dir` may be written — the
    folder exists and is writable, and every existing `<name>_<split>_NNNNNN.bin` there is a shard (or --force)."""
    out_dir = Path(out_dir)
    first = out_dir / shard_name(name, split, 0)
    for path in [first, *sorted(p for p in out_dir.glob(f"{name}_{split}_*.bin") if p != first)]:
        check_output(path, inputs, force, is_shard_file, "a Parameter Golf token shard")


def document_starts(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """Positions (int64) of the BOS tokens, i.e. where each document begins."""
    return np.flatnonzero(np.asarray(tokens) == bos_id).astype(np.int64)
