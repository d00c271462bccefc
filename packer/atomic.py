"""Atomic file output: write to a temporary file in the destination folder, fsync, rename over the target.

An existing file at the target is replaced only when the new one is complete; an interrupted write leaves
at most a hidden `.<name>.tmp-*` file (removed on any Python-level failure), never a partial target.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from packer.errors import UsageError


def refuse_same_path(out: Path, inputs: list[Path]) -> None:
    """UsageError if `out` names the same file as any input (the input would be destroyed)."""
    out_r = Path(out).resolve()
    for p in inputs:
        p = Path(p)
        if p.resolve() == out_r or (p.exists() and out_r.exists() and os.path.samefile(p, out_r)):
            raise UsageError(f"output {out} is the same file as input {p}; choose another output path")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
