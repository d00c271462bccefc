"""verify under torchrun: 2 gloo processes give the one-process result to the last digit (windows split by rank,
per-target losses all-reduced in float64), routing counts included; only rank 0 prints; --max-tokens is
labelled partial; --device refuses what is not there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli import main
from core.checkpoint import save_checkpoint
from core.config import ModelConfig
from core.corpus import Document
from core.model import RecurrentLM
from core.shards import encode_documents, write_split

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(args, code=0):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, (res.stdout, res.stderr)
    return res


@pytest.fixture(scope="module")
def packed(tmp_path_factory, small_tokenizer):
    """A small recurrent core with an embedded routing rule, packed; shards beside it."""
    d = tmp_path_factory.mktemp("dverify")
    docs = [Document(f"d{i}", f"def g{i}(y):\n    return y - {i} * {i % 5}\n" * 6) for i in range(100)]
    write_split(encode_documents(docs[:80], small_tokenizer), d, "t", "train")
    write_split(encode_documents(docs[80:], small_tokenizer), d, "t", "val")
    cfg = ModelConfig(vocab_size=small_tokenizer.vocab_size, d_model=32, n_heads=2, n_kv_heads=1, n_passes=2,
                      seq_len=32)
    torch.manual_seed(1)
    save_checkpoint(d / "m", RecurrentLM(cfg), cfg, {"tokenizer_sha256": small_tokenizer.sha256,
                                                    "train": {"holdout_tokens": 2049}})
    run(["pack", d / "m", "-o", d / "m.gpk", "--codecs", "zstd", "--route-signal", "update_size"])
    return d


def torchrun_verify(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cli",
           "verify", *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)        # a hang is ended by killing torchrun and its workers
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    assert proc.returncode == 0, f"torchrun exit {proc.returncode}:\n{err[-4000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_two_gloo_processes_equal_one_process(packed, small_tokenizer):
    d = packed
    common = ["--data", d, "--tokenizer", small_tokenizer.path, "--reference", d / "m", "--batch-size", "4",
              "--json"]
    one = json.loads(run(["verify", d / "m.gpk", *common]).stdout)
    got = torchrun_verify([d / "m.gpk", *common, "--device", "cpu"], d)
    two = json.loads(got.stdout)                        # one JSON document: rank 1 printed nothing
    assert one["processes"] == 1 and two["processes"] == 2
    for key in ("val_bpb", "val_loss", "tokens", "bytes", "route_selected", "route_positions", "cap_bound_count",
                "route_fraction_realized"):
        assert two[key] == one[key], key
    assert two["reference"]["val_bpb"] == one["reference"]["val_bpb"]
    assert two["route_selected"] > 0                    # the routing counts were summed over both ranks


def test_max_tokens_is_labelled_partial(packed, small_tokenizer):
    d = packed
    common = ["--data", d, "--tokenizer", small_tokenizer.path, "--json"]
    full = json.loads(run(["verify", d / "m.gpk", *common]).stdout)
    part = json.loads(run(["verify", d / "m.gpk", *common, "--max-tokens", "100"]).stdout)
    assert full["partial"] is False and part["partial"] is True
    assert part["tokens"] == 100 < full["tokens"] and "partial" in part["data"]
    text = run(["verify", d / "m.gpk", *common[:-1], "--max-tokens", "100"]).stdout
    assert "partial" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error(packed, small_tokenizer):
    d = packed
    res = run(["verify", d / "m.gpk", "--data", d, "--tokenizer", small_tokenizer.path, "--device", "cuda:1"], 2)
    assert "--device cuda:1" in res.stderr and "GPU" in res.stderr
    res = run(["verify", d / "m.gpk", "--data", d, "--tokenizer", small_tokenizer.path, "--device", "tpu"], 2)
    assert "--device 'tpu'" in res.stderr
