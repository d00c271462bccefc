"""A short training run on real text lowers the loss; the schedule and config checks behave."""

import numpy as np
import pytest

from core.config import ModelConfig
from core.shards import encode_documents
from core.train import TrainConfig, lr_at, quick_val_bpb, train
from packer.errors import ConfigError


def test_short_run_lowers_loss(small_tokenizer, default_docs):
    toks = encode_documents(default_docs[:40], small_tokenizer)
    val = encode_documents(default_docs[40:44], small_tokenizer)
    tables = small_tokenizer.byte_tables()
    cfg = ModelConfig(vocab_size=small_tokenizer.vocab_size, d_model=32, n_heads=2, n_kv_heads=1, n_passes=2,
                      seq_len=32)
    res = train(cfg, TrainConfig(steps=60, batch_size=8, lr=1e-2, eval_every=1000), toks, val, tables,
                progress=False)
    first = np.mean([r["train_loss"] for r in res.history[:5]])
    last = np.mean([r["train_loss"] for r in res.history[-5:]])
    assert last < first - 0.5
    loss, bpb = quick_val_bpb(res.model, val, tables, 4096)
    assert loss < np.log(small_tokenizer.vocab_size) and bpb > 0


def test_same_seed_same_model(small_tokenizer, default_docs):
    toks = encode_documents(default_docs[:10], small_tokenizer)
    tables = small_tokenizer.byte_tables()
    cfg = ModelConfig(vocab_size=small_tokenizer.vocab_size, d_model=16, n_heads=2, n_kv_heads=1, n_passes=2,
                      seq_len=16)
    tc = TrainConfig(steps=5, batch_size=4, eval_every=1000)
    a = train(cfg, tc, toks, toks, tables, progress=False).model.state_dict()
    b = train(cfg, tc, toks, toks, tables, progress=False).model.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_schedule_and_validation():
    tc = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_frac=0.1)
    assert lr_at(tc, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(tc, 50, 0.5) == pytest.approx(0.55)
    assert lr_at(tc, 99, 1.0) == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        TrainConfig()
    with pytest.raises(ConfigError):
        TrainConfig(steps=10, train_seconds=5)
