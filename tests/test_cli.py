"""The CLI end to end on a tiny model in a temporary folder: train, pack, audit, verify, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from core.shards import encode_documents, write_split

TINY = ["--d-model", "32", "--n-heads", "2", "--n-kv-heads", "1", "--passes", "2", "--seq-len", "32",
        "--batch-size", "8", "--eval-every", "1000"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_tokenizer, default_docs):
    d = tmp_path_factory.mktemp("cli")
    train = encode_documents(default_docs[:60], small_tokenizer)
    val = encode_documents(default_docs[60:70], small_tokenizer)
    write_split(train, d, "tiny", "train")
    write_split(val, d, "tiny", "val")
    return d


def run(args, code=0):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == code, (res.stdout, res.stderr)
    return res


@pytest.fixture(scope="module")
def trained(workdir, small_tokenizer):
    # vocab is set by the tokenizer: the tiny tokenizer has 400 pieces
    args = ["train", "--data", str(workdir), "--tokenizer", str(small_tokenizer.path), "--out", str(workdir),
            "--name", "tiny", "--steps", "30", "--vocab-size", "400", "--holdout-tokens", "4097", "--json",
            *TINY]
    rep = json.loads(run(args).stdout)
    return rep


def test_train_pack_audit_verify(workdir, small_tokenizer, trained):
    ckpt = trained["checkpoint"]
    art = workdir / "tiny.gpk"
    packed = json.loads(run(["pack", ckpt, "-o", str(art), "--json"]).stdout)
    assert packed["file_bytes"] == art.stat().st_size
    audit = json.loads(run(["audit", str(art), "--json"]).stdout)
    assert sum(s["bytes"] for s in audit["sections"]) == audit["file_bytes"] == art.stat().st_size
    assert audit["total_bytes"] == audit["file_bytes"] + audit["code_bytes"]
    assert audit["headroom_bytes"] == audit["budget_bytes"] - audit["total_bytes"]
    for t in audit["tensors"]:
        assert {"name", "format", "params", "bytes", "bits_per_param"} <= set(t)
    m = audit["manifest"]                       # format 1.1: the JSON is stored compressed
    assert audit["format_version"] == "1.1" and m["stored_bytes"] < m["json_bytes"]
    assert m["stored_bytes"] == next(s["bytes"] for s in audit["sections"] if s["name"] == "manifest")
    assert f"{m['stored_bytes']:,} B stored, {m['json_bytes']:,} B as JSON" in run(["audit", str(art)]).stdout
    ver = json.loads(run(["verify", str(art), "--data", str(workdir), "--tokenizer",
                          str(small_tokenizer.path), "--reference", ckpt, "--json"]).stdout)
    for key in ("val_loss", "val_bpb", "tokens", "bytes", "seconds", "tokens_per_second", "unigram_bpb"):
        assert key in ver
    assert abs(ver["quantization_gap_bpb"]) < 0.05
    assert np.isclose(ver["reference"]["val_bpb"], trained["val_bpb"], rtol=1e-4)  # same tokens, float noise only


def test_pack_twice_identical(workdir, trained):
    a, b = workdir / "a.gpk", workdir / "b.gpk"
    run(["pack", trained["checkpoint"], "-o", str(a)])
    run(["pack", trained["checkpoint"], "-o", str(b)])
    assert a.read_bytes() == b.read_bytes()


def test_corrupt_and_foreign_files_give_one_line_errors(workdir, trained, small_tokenizer):
    art = workdir / "c.gpk"
    run(["pack", trained["checkpoint"], "-o", str(art)])
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = workdir / "flipped.gpk"
    bad.write_bytes(bytes(data))
    res = run(["audit", str(bad)], code=5)
    assert res.stderr.startswith("golfpack: error:") and "SHA-256" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    trunc = workdir / "trunc.gpk"
    trunc.write_bytes(bytes(data[:100]))
    res = run(["verify", str(trunc), "--data", str(workdir), "--tokenizer", str(small_tokenizer.path)], code=5)
    assert "golfpack: error:" in res.stderr
    res = run(["audit", str(small_tokenizer.path)], code=5)
    assert "not a golfpack artifact" in res.stderr


NOISY = r'''
import logging, sys, warnings
import click
import cli

@cli.main.command()
def noisy():
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward from kernels")
    warnings.warn("a third-party deprecation", DeprecationWarning)
    warnings.warn("a third-party user warning")
    click.echo("golfpack's own line", err=True)

cli.main(sys.argv[1:])
'''


def test_dependency_noise_only_with_debug(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    quiet = subprocess.run([sys.executable, "-c", NOISY, "noisy"], cwd=root, capture_output=True, text=True, check=False)
    assert quiet.returncode == 0 and quiet.stderr == "golfpack's own line\n"
    loud = subprocess.run([sys.executable, "-c", NOISY, "--debug", "noisy"], cwd=root, capture_output=True, text=True,
                          check=False)
    assert "gemm_4bit_forward" in loud.stderr and "third-party user warning" in loud.stderr


def test_version_and_internal_errors_are_one_line(monkeypatch, tmp_path):
    from common import __version__

    res = CliRunner().invoke(main, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"golfpack, version {__version__}"
    import packer.audit

    monkeypatch.setattr(packer.audit, "read_artifact", lambda p: 1 / 0)
    monkeypatch.setattr("cli.audit_file", lambda *a: 1 / 0)
    res = CliRunner().invoke(main, ["audit", str(tmp_path / "x.gpk")])
    assert res.exit_code == 70 and "Traceback" not in res.stderr
    assert res.stderr.strip() == ("golfpack: internal error: ZeroDivisionError: division by zero; rerun with --debug "
                                  "for the traceback")
