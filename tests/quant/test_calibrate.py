"""Calibration reads TRAINING tokens only: validation shards are never opened, and do not change the result."""

import numpy as np
import pytest

import core.shards
from common.errors import UsageError
from core.shards import write_shard
from core.sources import load_source
from packer.reader import read_artifact
from quant.calibrate import calibration_windows, collect_hessians
from quant.options import PackOptions
from quant.pack_job import PackRequest, pack_job
from quant.pipeline import Packer


def pack_checkpoint_file(ckpt, out, opts, route=None):
    return pack_job(load_source(ckpt), PackRequest(out=out, options=opts, route=route, progress=False))


def test_windows_never_open_validation_shards(tiny, tiny_dir, monkeypatch):
    TINY = tiny.cfg
    opened = []
    real = core.shards.read_shard
    monkeypatch.setattr(core.shards, "read_shard", lambda p: opened.append(str(p)) or real(p))
    win = calibration_windows(tiny_dir, 2048, TINY.seq_len, TINY.vocab_size)
    assert opened and all("_train_" in p and "_val_" not in p for p in opened)
    assert win.shape == (64, TINY.seq_len + 1) and win.max() < TINY.vocab_size
    with pytest.raises(UsageError, match="training shard"):
        calibration_windows(tiny_dir / "tiny_val_000000.bin", 2048, TINY.seq_len, TINY.vocab_size)


def test_gptq_result_independent_of_validation_data(tiny, tiny_dir, tmp_path):
    TINY = tiny.cfg
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "tiny_train_000000.bin").write_bytes((tiny_dir / "tiny_train_000000.bin").read_bytes())
    write_shard(clean / "tiny_val_000000.bin", np.arange(500, dtype=np.uint16) % TINY.vocab_size)
    model = tiny.model()
    results = []
    for folder in (tiny_dir, clean):           # garbage validation file vs a real, different one
        win = calibration_windows(folder, 2048, TINY.seq_len, TINY.vocab_size)
        res = Packer(model, tiny.tensors(model), tiny.body(), PackOptions(extra_codecs=()), windows=win, progress=False).result()
        results.append(res)
    assert results[0].data == results[1].data
    assert "gptq" in set(results[0].scales.values())


def test_shared_block_hessian_sums_over_all_passes(tiny, tiny_dir):
    TINY = tiny.cfg
    model = tiny.model()
    win = calibration_windows(tiny_dir, 1024, TINY.seq_len, TINY.vocab_size)
    hess = collect_hessians(model, win, progress=False)
    n_inputs = win.shape[0] * TINY.seq_len
    assert hess["blocks.0.attn.c_q.weight"].rows == TINY.n_passes * n_inputs     # K passes, one block
    assert hess["tok_emb.weight"].rows == n_inputs                                 # the tied head, once
    from torch import nn
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert linear and all(hess[n].rows == TINY.n_passes * n_inputs for n in linear)   # no weight bypasses a hook
    h = hess["blocks.0.mlp.proj.weight"].matrix
    assert h.shape == (TINY.mlp_hidden, TINY.mlp_hidden) and np.allclose(h, h.T)


def test_pack_checkpoint_calibrates_from_its_folder(tiny_dir, tmp_path):
    res = pack_checkpoint_file(tiny_dir / "tiny", tmp_path / "t.gpk", PackOptions())
    assert res.report["calibration"]["tokens"] > 0
    man = read_artifact(tmp_path / "t.gpk").manifest
    int6 = {t["name"]: t["scale"] for t in man["tensors"] if t.get("format") == "int6_row"}
    assert set(int6.values()) == {"gptq"}, int6      # every block matrix got a Hessian and GPTQ won


def test_calibrated_pack_does_not_depend_on_torch_threads(tiny, tiny_dir):
    import torch

    model = tiny.model()
    win = calibration_windows(tiny_dir, 1024, tiny.cfg.seq_len, tiny.cfg.vocab_size)
    out = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        out.append(Packer(model, tiny.tensors(model), tiny.body(), PackOptions(extra_codecs=()), windows=win, progress=False).result().data)
    assert out[0] == out[1]


def test_checkpoint_holdout_reads_the_training_meta():
    from quant.calibrate import checkpoint_holdout
    assert checkpoint_holdout({"train": {"holdout_tokens": 65_537}}) == 65_537
    for meta in ({}, {"train": {}}, {"train": {"holdout_tokens": 0}}, {"train": {"holdout_tokens": True}},
                 {"train": "x"}, None):
        assert checkpoint_holdout(meta) == 0


def test_a_checkpoint_with_a_hold_out_is_calibrated_on_that_tail_only(tiny, tiny_dir, tmp_path):
    """The stream's head holds token ids the model cannot have (>= vocab): windows over the whole stream
    are refused, windows over the hold-out tail never see them, and pack calibrates there."""
    from common.errors import DataError
    from core.checkpoint import save_checkpoint

    TINY = tiny.cfg
    tail = 4096
    toks = np.concatenate([np.full(6000, TINY.vocab_size + 5), np.arange(tail) % TINY.vocab_size]).astype(np.uint16)
    write_shard(tmp_path / "t_train_000000.bin", toks)
    with pytest.raises(DataError, match="outside the model's vocabulary"):
        calibration_windows(tmp_path, 2048, TINY.seq_len, TINY.vocab_size)
    win = calibration_windows(tmp_path, 2048, TINY.seq_len, TINY.vocab_size, tail=tail)
    assert win.max() < TINY.vocab_size and win.shape == (64, TINY.seq_len + 1)
    save_checkpoint(tmp_path / "held", tiny.model(), TINY, {"tokenizer_sha256": None,
                                                            "train": {"holdout_tokens": tail}})
    res = pack_checkpoint_file(tmp_path / "held.safetensors", tmp_path / "held.gpk",
                               PackOptions(extra_codecs=()))
    assert res.report["calibration"]["windows"] > 0 and "gptq" in set(res.scales.values())
    save_checkpoint(tmp_path / "seen", tiny.model(), TINY, {"tokenizer_sha256": None})
    with pytest.raises(DataError, match="outside the model's vocabulary"):
        pack_checkpoint_file(tmp_path / "seen.safetensors", tmp_path / "seen.gpk", PackOptions(extra_codecs=()))
