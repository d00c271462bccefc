"""Text documents: the embedded default corpus (Python's own documentation) and user text files.

Owns what a document is, how the default corpus is enumerated, the fixed train/validation split, and reading
user text (.txt and WikiText's .raw, .jsonl, .jsonl.gz/.json.gz, folders). Must not tokenize or write shards (core/shards.py),
and must not import standard-library modules for their docstrings in this process: that happens in a
separate interpreter (core/_stdlib_docs.py) so that no import side effect reaches the caller.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.errors import DataError

MIN_DOCUMENT_CHARS = 200
TINYSTORIES_SEPARATOR = "<|endoftext|>"
_WORKER = Path(__file__).resolve().with_name("_stdlib_docs.py")
_WORKER_TIMEOUT_S = 300


@dataclass(frozen=True)
class Document:
    """One document: a stable name (used for the split) and its text."""

    name: str
    text: str


def _topic_documents() -> list[Document]:
    from pydoc_data.topics import topics

    return [Document(f"topic:{key}", topics[key]) for key in sorted(topics)]


def _module_documents() -> list[Document]:
    """Module docstrings, collected by a fresh isolated interpreter (-I: no environment, no user site;
    -S: no site-packages, so only the standard library is visible)."""
    cmd = [sys.executable, "-I", "-S", str(_WORKER)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=_WORKER_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"cannot collect standard-library docstrings with {_WORKER}: {exc}") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace")[-2000:]
        raise DataError(f"{_WORKER} exited with status {proc.returncode}; its stderr ends with:\n{tail}")
    try:
        pairs = json.loads(proc.stdout.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{_WORKER} printed something other than JSON: {exc}") from exc
    return [Document(f"module:{name}", text) for name, text in pairs]


def default_corpus() -> list[Document]:
    """Every pydoc topic (sorted by key), then every importable public standard-library module's
    documentation (sorted by module name), dropping documents shorter than MIN_DOCUMENT_CHARS.

    The same Python build gives the same documents in the same order on every machine.
    """
    docs = _topic_documents() + _module_documents()
    return [d for d in docs if len(d.text) >= MIN_DOCUMENT_CHARS]


def is_validation(name: str, val_fraction: float) -> bool:
    """A document's split, from the sha256 of its name alone: it never moves when others are added."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def split_documents(docs: list[Document], val_fraction: float = 0.05) -> tuple[list[Document], list[Document]]:
    """(train, val), each in the input order; about `val_fraction` of the documents go to val."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
    train, val = [], []
    for doc in docs:
        (val if is_validation(doc.name, val_fraction) else train).append(doc)
    return train, val


# --- user text -------------------------------------------------------------------------------------------

_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")
_TEXT_SUFFIXES = (".txt", ".raw")   # .raw: WikiText's plain-text files


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(_TEXT_SUFFIXES):
        return "txt"
    return None


def _read_txt(path: Path) -> Iterator[Document]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text at byte {exc.start}; convert it to UTF-8") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    lines = text.split("\n")
    if not any(line.rstrip("\r") == TINYSTORIES_SEPARATOR for line in lines):
        if text.strip():
            yield Document(str(path), text)
        return
    part: list[str] = []
    index = 0
    for line in lines + [TINYSTORIES_SEPARATOR]:
        if line.rstrip("\r") == TINYSTORIES_SEPARATOR:
            body = "\n".join(part).strip("\n")
            if body.strip():
                yield Document(f"{path}#{index}", body)
                index += 1
            part = []
        else:
            part.append(line)


def _read_jsonl(path: Path) -> Iterator[Document]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
                if not isinstance(record, dict) or "text" not in record:
                    raise DataError(f"{path}:{lineno}: no 'text' field; each line must be an object like "
                                    '{"text": "..."}')
                text = record["text"]
                if not isinstance(text, str):
                    raise DataError(f"{path}:{lineno}: 'text' is a {type(text).__name__}, not a string")
                if text.strip():  # an empty document would add nothing but a BOS token
                    yield Document(f"{path}:{lineno}", text)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p) is not None)
            if not found:
                raise DataError(f"{path}: no .txt, .raw, .jsonl, .jsonl.gz or .json.gz files in this folder")
            files.extend(found)
        elif path.is_file():
            if _kind(path) is None:
                raise DataError(f"{path}: unsupported file type; use .txt, .raw, .jsonl, .jsonl.gz or .json.gz")
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def load_text_documents(paths: list[Path]) -> list[Document]:
    """Documents from user files, in the given order (folders recursively, sorted).

    .txt / .raw: the whole file is one document, unless it has lines equal to `<|endoftext|>`, which separate
    documents (TinyStories). .jsonl / .jsonl.gz / .json.gz: one JSON object per line with a `text` field.
    Blank lines and documents that are empty or whitespace only are left out.
    """
    docs: list[Document] = []
    for path in _expand(paths):
        reader = _read_jsonl if _kind(path) == "jsonl" else _read_txt
        docs.extend(reader(path))
    return docs
