"""Atomic file output: write to a temporary file in the destination folder, fsync, rename over the target.

An existing file at the target is replaced only when the new one is complete and durable; an interrupted
write leaves at most a hidden `.<name>.tmp-XXXXXXXX` file beside it (removed on any Python-level failure,
KeyboardInterrupt included; a SIGKILL can leave one, never a partial target). The next write to the same
target removes such leftovers — recognisably golfpack's (that exact name pattern, a regular file) and older
than the running process — and says so on stderr. Also owns the check that an output does not name one of
the inputs. Must not read or modify any input file.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

from common.errors import UsageError

TEMP_INFIX = ".tmp-"
PROCESS_START = time.time()       # temporaries older than this are no running write's of ours
_MKSTEMP_SUFFIX = re.compile(r"[a-z0-9_]{8}")   # tempfile's random part


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


def check_output(path: Path, inputs: list[Path]) -> None:
    """The cheap checks before any work: `path` names none of the inputs, is not a folder, and its folder
    exists and is writable (UsageError saying which)."""
    path = Path(path)
    refuse_same_path(path, inputs)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} does not exist; create it or choose another output path")
    if path.is_dir():
        raise UsageError(f"output {path} is a folder; give a file path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {folder} is not writable; choose another output path")


def temp_files_for(path: Path) -> list[Path]:
    """Leftover temporary files of an interrupted write to `path` (what a SIGKILL can leave behind)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    return sorted(folder.glob(f".{path.name}{TEMP_INFIX}*"))


def remove_stale_temps(path: Path, older_than: float = PROCESS_START) -> list[Path]:
    """Remove the leftovers of interrupted writes to `path` (golfpack's temporary-file names, regular files,
    last modified before `older_than`), saying so on stderr; returns what was removed."""
    removed = []
    prefix = f".{Path(path).name}{TEMP_INFIX}"
    for p in temp_files_for(path):
        try:
            st = p.lstat()
        except OSError:
            continue
        if not (p.name.startswith(prefix) and _MKSTEMP_SUFFIX.fullmatch(p.name[len(prefix):])
                and p.is_file() and not p.is_symlink() and st.st_mtime < older_than):
            continue
        try:
            p.unlink()
        except OSError:
            continue
        removed.append(p)
    if removed:
        sys.stderr.write(f"golfpack: removed {len(removed)} stale temporary file(s) left by an interrupted write "
                         f"to {path}: {', '.join(p.name for p in removed)}\n")
    return removed


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably, or raise UsageError and leave `path` as it was."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"output folder {folder} does not exist; create it or choose another output path")
    if path.is_dir():
        raise UsageError(f"output {path} is a folder; give a file path")
    remove_stale_temps(path)
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
