"""Packing never loses work, is deterministic, and keeps the budget promise (the CLI end to end).

- inputs are never modified (hashes and mtimes before and after) and an output naming an input is refused;
- an existing output is replaced only by a complete artifact: a failed write, an impossible budget, SIGINT
  or SIGKILL in the middle of writing leave it byte-identical (and a fresh path stays absent);
- identical bytes from separate processes with different PYTHONHASHSEED and torch thread counts, and the
  manifest says how the file was made (tool, version, options), which `verify` reports as `made_by`;
- a budget met exactly is accepted, one byte less is refused with exit code 6, naming the excess and the
  tensors that dominate.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from common.atomic import temp_files_for
from common.errors import BudgetError, OutputError
from packer.reader import read_artifact

ROOT = Path(__file__).resolve().parents[2]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cli(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    import torch

    from core.checkpoint import save_checkpoint
    from core.config import ModelConfig
    from core.model import RecurrentLM

    cfg = ModelConfig(vocab_size=64, d_model=32, n_heads=2, n_kv_heads=1, n_passes=2, seq_len=32)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(folder / "tiny", RecurrentLM(cfg), cfg, {"tokenizer_sha256": None})


@pytest.fixture(scope="module")
def packed(ckpt, tmp_path_factory) -> dict:
    """One pack with the default budget: the report, the bytes, and the input hashes before it."""
    before = {p: (sha(p), p.stat().st_mtime_ns) for p in (ckpt, ckpt.with_suffix(".json"))}
    out = tmp_path_factory.mktemp("out") / "tiny.gpk"
    res = cli(["pack", ckpt, "-o", out, "--json"])
    assert res.exit_code == 0, res.output
    return {"report": json.loads(res.stdout), "bytes": out.read_bytes(), "path": out, "inputs_before": before}


def test_pack_never_modifies_its_inputs(packed):
    for path, (digest, mtime) in packed["inputs_before"].items():
        assert sha(path) == digest and path.stat().st_mtime_ns == mtime, f"{path} changed during pack"
    assert read_artifact(packed["path"]).layout.file_bytes == packed["report"]["file_bytes"]


@pytest.mark.parametrize("target", ["safetensors", "json", "hardlink", "symlink", "relative", "plan"])
def test_output_naming_an_input_is_refused(ckpt, tmp_path, target):
    st, js = ckpt, ckpt.with_suffix(".json")
    before = (sha(st), sha(js))
    out = {"safetensors": st, "json": js, "relative": Path(os.path.relpath(st))}.get(target)
    extra = []
    if target == "hardlink":
        out = tmp_path / "link.gpk"
        os.link(st, out)
    elif target == "symlink":
        out = tmp_path / "sym.gpk"
        out.symlink_to(js)
    elif target == "plan":
        out = tmp_path / "plan.json"
        out.write_text("{}")
        extra = ["--plan", out]
    res = cli(["pack", st, "-o", out, *extra])
    assert res.exit_code == OutputError.exit_code, res.output
    assert "is the same file as input" in res.output
    assert (sha(st), sha(js)) == before


def test_budget_met_exactly_is_accepted_and_one_byte_less_is_refused(ckpt, packed, tmp_path):
    total, out = packed["report"]["total_bytes"], tmp_path / "exact.gpk"
    for _ in range(8):   # the manifest records the budget (brotli-compressed), so the size moves with its digits
        res = cli(["pack", ckpt, "-o", out, "--budget-bytes", total, "--no-fill", "--json"])
        if res.exit_code == BudgetError.exit_code:          # this budget's spelling compressed worse: its size
            total = int(re.search(r"= (\d+) B, over the budget", res.output).group(1))
            continue
        assert res.exit_code == 0, res.output
        if json.loads(res.stdout)["headroom_bytes"] == 0:
            break
        total = json.loads(res.stdout)["total_bytes"]
    assert res.exit_code == 0 and json.loads(res.stdout)["headroom_bytes"] == 0
    audit = json.loads(cli(["audit", out, "--json", "--budget-bytes", total]).stdout)
    assert audit["total_bytes"] == total and audit["headroom_bytes"] == 0
    old = out.read_bytes()
    res = cli(["pack", ckpt, "-o", out, "--budget-bytes", total - 1, "--no-fill"])
    assert res.exit_code == BudgetError.exit_code, res.output
    # the message contract: the excess, exactly (the budget's own digits, brotli-compressed in the manifest, can
    # move the artifact's size by a few bytes, so the excess is that pack's real total minus the budget)
    got = re.search(rf"= (\d+) B, over the budget {total - 1} B by (\d+) B", res.output)
    assert got and int(got.group(1)) >= total and int(got.group(2)) == int(got.group(1)) - (total - 1)
    top = min((t for t in audit["tensors"] if t["bytes"]), key=lambda t: (-t["bytes"], t["name"]))
    assert f"largest tensors (stored bytes): {top['name']} {top['bytes']} B" in res.output
    assert out.read_bytes() == old and temp_files_for(out) == []
    res = cli(["pack", ckpt, "-o", tmp_path / "never.gpk", "--budget-bytes", 1000, "--no-fill"])
    assert res.exit_code == BudgetError.exit_code, res.output        # refused from the byte estimates, at once
    assert "--budget-bytes 1,000 cannot be met: the counted code alone is" in res.output
    assert not (tmp_path / "never.gpk").exists()


def test_a_failed_or_interrupted_write_keeps_the_old_output(monkeypatch, tmp_path):
    from common import atomic

    out = tmp_path / "model.gpk"
    out.write_bytes(b"GPAK: an old artifact")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    with pytest.raises(OutputError, match="No space left on device.*untouched"):
        atomic.write_bytes_atomic(out, b"NEW" * 1000)
    assert out.read_bytes() == b"GPAK: an old artifact" and temp_files_for(out) == []

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_bytes_atomic(tmp_path / "fresh.gpk", b"NEW")
    assert not (tmp_path / "fresh.gpk").exists() and temp_files_for(tmp_path / "fresh.gpk") == []


# A pack run by the CLI in a child process that stops inside the atomic write, deterministically: at
# stage "write" after writing half of the artifact to the temporary file, at stage "fsync" after writing
# all of it but before the rename. It then announces itself through the `ready` file and waits to be killed.
CHILD = r'''
import signal, sys, time, types
from pathlib import Path
# a child started from a background job (`make test &`, nohup, some CI runners) inherits an ignored SIGINT:
# set the disposition here, or the interrupt below would never arrive
signal.signal(signal.SIGINT, signal.default_int_handler)
stage, ready, ckpt, out = sys.argv[1:5]
import common.atomic as A
from cli import main
real = A.os

def block():
    Path(ready).write_text("ready")
    time.sleep(300)

class HalfWriter:
    def __init__(self, f):
        self.f = f
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)
    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        block()

proxy = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
if stage == "write":
    proxy.fdopen = lambda fd, mode: HalfWriter(real.fdopen(fd, mode))
else:
    proxy.fsync = lambda fd: block()
A.os = proxy
main(["pack", ckpt, "-o", out])
'''


@pytest.mark.slow
def test_interrupted_pack_leaves_no_partial_artifact(ckpt, packed, tmp_path):
    full = len(packed["bytes"])
    cases = [("write", signal.SIGKILL, True), ("fsync", signal.SIGINT, False)]
    runs = []
    for i, (stage, sig, has_old) in enumerate(cases):
        out, ready = tmp_path / f"out{i}.gpk", tmp_path / f"ready{i}"
        if has_old:
            out.write_bytes(b"GPAK: an old artifact")
        proc = subprocess.Popen([sys.executable, "-c", CHILD, stage, str(ready), str(ckpt), str(out)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        runs.append((stage, sig, has_old, out, ready, proc))
    try:
        for stage, sig, has_old, out, ready, proc in runs:
            deadline = time.monotonic() + 180
            while not ready.exists():
                assert proc.poll() is None, f"child ({stage}) ended early: {proc.communicate()}"
                assert time.monotonic() < deadline, f"child ({stage}) never reached the write"
                time.sleep(0.05)
            temps = temp_files_for(out)
            assert len(temps) == 1, temps
            written = temps[0].stat().st_size
            assert written == (full // 2 if stage == "write" else full)   # killed mid-write / before rename
            proc.send_signal(sig)
            proc.wait(timeout=60)
            assert proc.returncode != 0
            if has_old:
                assert out.read_bytes() == b"GPAK: an old artifact", f"{stage}/{sig.name} damaged the old output"
            else:
                assert not out.exists(), f"{stage}/{sig.name} left a file at the output path"
            left = temp_files_for(out)
            if sig == signal.SIGINT:
                assert left == [], "a Python-level interrupt must remove its temporary file"
            else:
                assert all(p.name.startswith(f".{out.name}.tmp-") for p in left)   # hidden, never the target
    finally:
        for *_, proc in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = runs[0][3]                      # a later pack (a new process) over the same path removes the leftover
    left = temp_files_for(out)
    assert len(left) == 1
    again = subprocess.run([sys.executable, "-m", "cli", "pack", str(ckpt), "-o", str(out)], cwd=ROOT, check=False,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == packed["bytes"] and temp_files_for(out) == []
    assert f"removed 1 stale temporary file(s) left by an interrupted write to {out}: {left[0].name}" in again.stderr


DETERMINISM_CHILD = r'''
import sys, torch
torch.set_num_threads(int(sys.argv[3]))
from cli import main
main(["pack", sys.argv[1], "-o", sys.argv[2]])
'''


@pytest.mark.slow
def test_identical_bytes_across_processes_hash_seeds_and_threads(ckpt, packed, tmp_path):
    procs = []
    for seed, threads in (("1", "1"), ("4242", "2")):
        env = dict(os.environ, PYTHONHASHSEED=seed, OMP_NUM_THREADS=threads)
        out = tmp_path / f"seed{seed}.gpk"
        procs.append((out, subprocess.Popen([sys.executable, "-c", DETERMINISM_CHILD, str(ckpt), str(out), threads],
                                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    for out, proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert out.read_bytes() == packed["bytes"], f"{out.name} differs from the in-process pack"


def test_manifest_records_how_the_file_was_made(packed):
    from common import __version__ as TOOL_VERSION
    from packer.manifest import made_by

    m = read_artifact(packed["path"]).manifest
    info = made_by(m)
    assert info["tool"] == "golfpack" and info["version"] == TOOL_VERSION
    assert info["options"]["budget_bytes"] == 16_000_000 and info["options"]["matrix_format"] == "int6_row"


def test_verify_reports_made_by(ckpt, tmp_path, small_tokenizer):
    import torch

    from core.checkpoint import save_checkpoint
    from core.config import ModelConfig
    from core.model import RecurrentLM
    from verify.job import VerifyRequest, verify_job

    cfg = ModelConfig(vocab_size=small_tokenizer.vocab_size, d_model=32, n_heads=2, n_kv_heads=1, n_passes=2,
                      seq_len=32)
    torch.manual_seed(0)
    st = save_checkpoint(tmp_path / "v", RecurrentLM(cfg), cfg, {"tokenizer_sha256": small_tokenizer.sha256})
    art = tmp_path / "v.gpk"
    assert cli(["pack", st, "-o", art]).exit_code == 0
    text = tmp_path / "doc.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    rep = verify_job(VerifyRequest(art, (text,), small_tokenizer.path, progress=False))
    assert rep["made_by"]["tool"] == "golfpack" and rep["made_by"]["options"]["embed_format"] == "int8_row"
