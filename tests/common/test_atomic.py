"""Atomic output (common/atomic.py): the cheap checks before work, and the removal of stale temporaries that an
interrupted (SIGKILLed) write left beside its target — only golfpack's own, only older than this process."""

import os
import time

import pytest

from common import atomic
from common.errors import OutputError


def test_stale_temporaries_are_removed_and_said(tmp_path, capsys):
    out = tmp_path / "m.gpk"
    old = [tmp_path / ".m.gpk.tmp-abcd1234", tmp_path / ".m.gpk.tmp-zz_9yy8x"]
    for p in old:
        p.write_bytes(b"half an artifact")
        os.utime(p, (atomic.PROCESS_START - 60, atomic.PROCESS_START - 60))
    fresh = tmp_path / ".m.gpk.tmp-newer123"            # a running write's (younger than this process)
    fresh.write_bytes(b"in progress")
    other = [tmp_path / ".m.gpk.tmp-not-ours-at-all", tmp_path / ".other.gpk.tmp-abcd1234", tmp_path / "m.gpk.tmp-abcd1234"]
    for p in other:
        p.write_bytes(b"x")
        os.utime(p, (atomic.PROCESS_START - 60, atomic.PROCESS_START - 60))
    atomic.write_bytes_atomic(out, b"NEW")
    assert out.read_bytes() == b"NEW"
    assert not any(p.exists() for p in old) and fresh.exists() and all(p.exists() for p in other)
    err = capsys.readouterr().err
    assert "removed 2 stale temporary file(s)" in err and ".m.gpk.tmp-abcd1234" in err
    atomic.write_bytes_atomic(out, b"AGAIN")
    assert "stale" not in capsys.readouterr().err                       # nothing left to say


def test_a_folder_named_like_a_temporary_is_left_alone(tmp_path):
    d = tmp_path / ".m.gpk.tmp-abcd1234"
    d.mkdir()
    os.utime(d, (time.time() - 3600, time.time() - 3600))
    atomic.write_bytes_atomic(tmp_path / "m.gpk", b"x")
    assert d.is_dir()


def test_check_output(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"in")
    atomic.check_output(tmp_path / "ok.gpk", [src])
    for out, match in ((src, "same file as input"), (tmp_path, "is a folder"), (tmp_path / "x" / "y", "does not exist")):
        with pytest.raises(OutputError, match=match):
            atomic.check_output(out, [src])
