"""Atomic file output: write to a temporary file in the destination folder, fsync, rename over the target.

An existing file at the target is replaced only when the new one is complete and durable; an interrupted
write leaves at most a hidden `.<name>.tmp-*` file beside it (removed on any Python-level failure,
KeyboardInterrupt included; a SIGKILL can leave one, never a partial target). Also owns the check that an
output does not name one of the inputs. Must not read or modify any input file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from packer.errors import UsageError

TEMP_INFIX = ".tmp-"


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)      # hard links and other spellings of one file
    except OSError:
        return False


def refuse_same_path(out: Path, inputs: list[Path]) -> None:
    """UsageError if `out` names the same file as any input (writing it would destroy the input)."""
    out = Path(out)
    for p in inputs:
        if p is not None and _same_file(Path(p), out):
            raise UsageError(f"output {out} is the same file as input {p}; writing it would destroy the input. "
                             f"Choose another output path")


def temp_files_for(path: Path) -> list[Path]:
    """Leftover temporary files of an interrupted write to `path` (what a SIGKILL can leave behind)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    return sorted(folder.glob(f".{path.name}{TEMP_INFIX}*"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably, or raise UsageError and leave `path` as it was."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} does not exist; create it or choose another output path")
    if path.is_dir():
        raise UsageError(f"output {path} is a folder; give a file path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_INFIX}", dir=folder)
    except OSError as exc:
        raise UsageError(f"cannot create a temporary file in {folder}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}; the previous file there, if any, "
                             f"is untouched") from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # some filesystems cannot fsync a folder; the file itself is already durable
