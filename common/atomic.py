"""Atomic file output: write to a temporary file in the destination folder, fsync, rename over the target.

An existing file at the target is replaced only when the new one is complete and durable; an interrupted
write leaves at most a hidden `.<name>.tmp-XXXXXXXX` file beside it (removed on any Python-level failure,
KeyboardInterrupt included; a SIGKILL can leave one, never a partial target). The next write to the same
target removes such leftovers — recognisably golfpack's (that exact name pattern, a regular file) and older
than the running process — and says so on stderr. Also owns the checks every command runs on its outputs
before any work (`check_output`): never one of the run's inputs; never a file golfpack did not write (without
--force: the caller says what its own outputs look like); a folder that exists and is writable. Must not read
or modify any input file.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common.errors import OutputError

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
    """OutputError if `out` names the same file as any input (writing it would destroy the input)."""
    out = Path(out)
    for p in inputs:
        if p is not None and _same_file(Path(p), out):
            raise OutputError(f"output {out} is the same file as input {p}; writing it would destroy the input. "
                              f"Choose another output path")


def head_bytes(path: Path, n: int = 64) -> bytes:
    """The first n bytes of a regular file (b"" if it cannot be read): what `ours` recognisers look at."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def check_output(path: Path, inputs: list[Path], force: bool = False, ours: Callable[[Path], bool] | None = None,
                 what: str = "a golfpack output") -> None:
    """The cheap checks before any work, OutputError saying which fails: `path` names none of the inputs (never
    overwritten, whatever --force says); it is not a folder; its folder exists and is writable; and an existing
    file there is replaced only if `ours(path)` recognises it as `what` this command writes, or with --force."""
    path = Path(path)
    refuse_same_path(path, inputs)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it or choose another output path")
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable; choose another output path")
    if (path.exists() or path.is_symlink()) and not force and not (ours is not None and ours(path)):
        raise OutputError(f"output {path} exists and is not {what}; golfpack replaces only its own outputs. "
                          f"Pass --force to replace it, or choose another output path")


def ensure_folder(folder: Path) -> Path:
    """An output folder (--out DIR), created with its parents if missing; OutputError if it cannot be one."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output folder {folder} is a file; give a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable; choose another output path")
    return folder


def looks_like_png_we_wrote(path: Path) -> bool:
    """A PNG whose header chunks carry golfpack's Software tag (every chart golfpack writes has one)."""
    head = head_bytes(path, 256)
    return head.startswith(b"\x89PNG\r\n\x1a\n") and b"Software\x00golfpack" in head


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
    """Write `data` to `path` atomically and durably, or raise OutputError and leave `path` as it was."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it or choose another output path")
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file path")
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_INFIX}", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot create a temporary file in {folder}: {exc.strerror or exc}") from None
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
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}; the previous file there, if any, "
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
