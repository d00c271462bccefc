"""Data-parallel training under torchrun (gloo, CPU) matches one process; the torchrun plumbing's logic.

One 2-process launch trains a tiny model twice (a step budget, then a wall-clock cap): it must finish,
rank 0 alone must write the checkpoint, every all-reduced number must be identical on both ranks, and the
loss curve must match a 1-process run with the same global batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import ConfigError
from core.checkpoint import load_checkpoint
from core.config import ModelConfig
from core.distributed import DistEnv, backend_for, distributed_session, read_dist_env, select_device
from core.shards import encode_documents, write_split
from core.train import TrainConfig, sample_batch
from core.train_job import run_train

REPO = Path(__file__).resolve().parents[2]

TINY = {"d_model": 32, "n_heads": 2, "n_kv_heads": 1, "n_passes": 2, "seq_len": 32}
STEPS = {"holdout_tokens": 0, "steps": 6, "batch_size": 8, "lr": 1e-2, "warmup_steps": 2, "eval_every": 3, "eval_tokens": 2048,
         "threads": 1, "device": "cpu"}
WALL = {"holdout_tokens": 0, "steps": 100_000, "max_wallclock_seconds": 1.5, "batch_size": 8, "eval_every": 10_000, "threads": 1,
        "device": "cpu"}

WORKER = '''
import json, sys
from dataclasses import asdict
from pathlib import Path
import torch.distributed as dist
from core.config import ModelConfig
from core.distributed import read_dist_env
from core.train import TrainConfig
from core.train_job import run_train
from common.errors import ConfigError

job = json.loads(Path(sys.argv[1]).read_text())
rank = read_dist_env().rank
root = Path(job["root"])
mc = ModelConfig(**job["model"])
out = {}
for label in ("steps", "wall"):
    res = run_train(Path(job["data"]), Path(job["tokenizer"]), root / f"{label}_rank{rank}", mc,
                    TrainConfig(**job[label]), name="model", progress=True)
    rep = asdict(res)
    rep["checkpoint"] = None if res.checkpoint is None else str(res.checkpoint)
    out[label] = rep
try:  # 7 sequences cannot split over 2 ranks: the job raises inside its session, which must tear down
    run_train(Path(job["data"]), Path(job["tokenizer"]), root / "bad", mc,
              TrainConfig(steps=1, batch_size=7, device="cpu", holdout_tokens=0))
    out["error"] = None
except ConfigError as exc:
    out["error"] = str(exc)
out["torn_down"] = not dist.is_initialized()
(root / f"rank{rank}.json").write_text(json.dumps(out))
'''


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, small_tokenizer, default_docs) -> Path:
    d = tmp_path_factory.mktemp("ddp_data")
    write_split(encode_documents(default_docs[:30], small_tokenizer), d, "tiny", "train")
    write_split(encode_documents(default_docs[30:34], small_tokenizer), d, "tiny", "val")
    return d


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, data_dir, small_tokenizer) -> Path:
    root = tmp_path_factory.mktemp("ddp_run")
    model = dict(TINY, vocab_size=small_tokenizer.vocab_size)
    job = {"root": str(root), "data": str(data_dir), "tokenizer": str(small_tokenizer.path), "model": model,
           "steps": STEPS, "wall": WALL}
    (root / "job.json").write_text(json.dumps(job))
    (root / "worker.py").write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--log-dir", str(root / "logs"), "--redirects", "3", str(root / "worker.py"),
           str(root / "job.json")]
    # its own session, so that a hang is ended by killing torchrun together with its workers
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    logs = "\n".join(f"--- {p}\n{p.read_text()}" for p in sorted((root / "logs").rglob("*.log")))
    assert proc.returncode == 0, f"torchrun exit {proc.returncode}:\n{err[-3000:]}\n{logs[-6000:]}"
    return root


def rank_reports(root: Path) -> tuple[dict, dict]:
    return (json.loads((root / "rank0.json").read_text()), json.loads((root / "rank1.json").read_text()))


@pytest.mark.slow
def test_two_ranks_agree_and_only_rank0_writes(two_ranks):
    r0, r1 = rank_reports(two_ranks)
    a, b = r0["steps"], r1["steps"]
    assert (a["rank"], b["rank"], a["world_size"], b["world_size"]) == (0, 1, 2, 2)
    assert a["val_loss"] == b["val_loss"] and a["val_bpb"] == b["val_bpb"]  # all-reduced: bit-identical
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    periodic = [[(h["val_loss"], h["val_bpb"]) for h in r["history"] if "val_loss" in h] for r in (a, b)]
    assert len(periodic[0]) == 2 and periodic[0] == periodic[1]
    assert a["steps"] == b["steps"] == 6 and a["tokens_seen"] == 6 * 8 * 32
    # rank 0 alone wrote the checkpoint, logs and progress
    assert a["checkpoint"] and Path(a["checkpoint"]).is_file() and b["checkpoint"] is None
    assert not (two_ranks / "steps_rank1").exists() and not (two_ranks / "wall_rank1").exists()
    logs = {p.parent.name + "/" + p.name: p.read_text() for p in (two_ranks / "logs").rglob("*.log")}
    assert "train" in logs["0/stderr.log"] and "step 3: train loss" in logs["0/stderr.log"]
    assert "train" not in logs["1/stderr.log"] and logs["1/stdout.log"] == ""


@pytest.mark.slow
def test_wallclock_cap_stops_all_ranks_on_the_same_step(two_ranks):
    r0, r1 = rank_reports(two_ranks)
    a, b = r0["wall"], r1["wall"]
    assert a["steps"] == b["steps"] and 0 < a["steps"] < WALL["steps"]
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    assert a["val_loss"] == b["val_loss"]


@pytest.mark.slow
def test_two_ranks_match_one_process(two_ranks, data_dir, small_tokenizer, tmp_path):
    threads = torch.get_num_threads()
    try:
        single = run_train(data_dir, small_tokenizer.path, tmp_path, ModelConfig(**TINY,
                           vocab_size=small_tokenizer.vocab_size), TrainConfig(**STEPS), progress=False)
    finally:
        torch.set_num_threads(threads)
    multi = rank_reports(two_ranks)[0]["steps"]
    one = np.array([h["train_loss"] for h in single.history])
    two = np.array([h["train_loss"] for h in multi["history"]])
    assert one.shape == two.shape == (6,)
    assert one[-1] < one[0] - 0.1  # it learns, so a match is not trivial
    np.testing.assert_allclose(two, one, rtol=0, atol=2e-5)  # measured: ~1e-6 (summation order only)
    assert abs(multi["val_loss"] - single.val_loss) < 2e-5
    # the checkpoint written by 2 processes has the 1-process format: same names, shapes, near-equal values
    ck1, ck2 = load_checkpoint(single.checkpoint), load_checkpoint(Path(multi["checkpoint"]))
    assert sorted(ck1.tensors) == sorted(ck2.tensors)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ck2.tensors)
    for k, t in ck1.tensors.items():
        assert ck2.tensors[k].shape == t.shape and ck2.tensors[k].dtype == t.dtype
        torch.testing.assert_close(ck2.tensors[k], t, rtol=0, atol=1e-4)  # measured: ~6e-6
    assert ck2.config == ck1.config and ck2.meta["world_size"] == 2 and ck1.meta["world_size"] == 1
    assert set(ck2.meta) == set(ck1.meta)


# --- logic that needs no launch -----------------------------------------------------------------------------
def test_read_dist_env():
    assert read_dist_env({}) == DistEnv(0, 1, 0)
    assert read_dist_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3", "PATH": "x"}) == DistEnv(3, 8, 3)
    with pytest.raises(ConfigError, match="incomplete"):
        read_dist_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="not an integer"):
        read_dist_env({"RANK": "a", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ConfigError, match="RANK=2"):
        read_dist_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_select_device_and_backend():
    env = DistEnv(rank=5, world_size=8, local_rank=5)
    assert select_device("auto", env, cuda_available=False, cuda_count=0) == torch.device("cpu")
    assert select_device("cpu", env, cuda_available=True, cuda_count=8) == torch.device("cpu")
    assert select_device("auto", env, cuda_available=True, cuda_count=8) == torch.device("cuda", 5)
    assert select_device("cuda", DistEnv(), cuda_available=True, cuda_count=1) == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="is_available"):
        select_device("cuda", env, cuda_available=False, cuda_count=0)
    with pytest.raises(ConfigError, match="only 4 visible"):
        select_device("auto", env, cuda_available=True, cuda_count=4)
    with pytest.raises(ConfigError, match="not one of"):
        select_device("tpu", env, cuda_available=False, cuda_count=0)
    assert backend_for(torch.device("cpu")) == "gloo" and backend_for(torch.device("cuda", 0)) == "nccl"


def test_single_process_session_needs_no_process_group():
    with distributed_session("cpu", environ={}) as ctx:
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
        t = torch.ones(3)
        ctx.average_([t])
        assert torch.equal(t, torch.ones(3)) and ctx.agree_max(2.5) == 2.5


@pytest.mark.slow
def test_error_inside_a_session_tears_the_process_group_down(two_ranks):
    for report in rank_reports(two_ranks):
        assert "split evenly over 2 ranks" in report["error"] and report["torn_down"] is True
    with pytest.raises(RuntimeError, match="boom"), distributed_session("cpu", environ={}):
        raise RuntimeError("boom")


def test_rank_strided_batches_tile_the_global_batch():
    tokens = np.arange(10_000) % 997
    full_x, full_y = sample_batch(tokens, 8, 16, np.random.default_rng(7))
    parts = [sample_batch(tokens, 8, 16, np.random.default_rng(7), rank=r, world_size=2) for r in (0, 1)]
    assert torch.equal(torch.cat([parts[0][0], parts[1][0]]), full_x[[0, 2, 4, 6, 1, 3, 5, 7]])
    assert torch.equal(parts[1][1], full_y[1::2])


def test_batch_tokens_and_budget():
    tc = TrainConfig(steps=10, batch_tokens=4096)
    assert tc.global_batch_seqs(128) == 32 and tc.global_batch_seqs(128, world_size=8) == 32
    assert TrainConfig(steps=1, batch_size=6).global_batch_seqs(64, 2) == 6
    with pytest.raises(ConfigError, match="multiple of seq_len"):
        tc.global_batch_seqs(100)
    with pytest.raises(ConfigError, match="split evenly"):
        tc.global_batch_seqs(128, world_size=3)
    capped = TrainConfig(steps=100, max_wallclock_seconds=10.0)
    assert capped.budget_fraction(10, 5.0) == 0.5 and capped.budget_fraction(50, 1.0) == 0.5
    assert TrainConfig(max_wallclock_seconds=600).budget_fraction(10**6, 600.0) == 1.0
    with pytest.raises(ConfigError):
        TrainConfig(steps=1, max_wallclock_seconds=0)
    with pytest.raises(ConfigError):
        TrainConfig(steps=1, device="gpu")


def test_cli_refuses_two_batch_sizes(tmp_path):
    from click.testing import CliRunner

    from cli import main

    res = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--tokenizer", str(tmp_path / "t.model"),
                                    "--out", str(tmp_path), "--vocab-size", "400", "--steps", "1",
                                    "--batch-size", "8", "--batch-tokens", "512"])
    assert res.exit_code == 2 and "--batch-size or --batch-tokens" in res.stderr
