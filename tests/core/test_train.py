"""A short training run on real text lowers the loss; the schedule and config checks behave."""

import numpy as np
import pytest

from common.errors import ConfigError
from core.config import ModelConfig
from core.shards import encode_documents
from core.train import TrainConfig, lr_at, quick_val_bpb, train


def test_short_run_lowers_loss(small_tokenizer, default_docs):
    toks = encode_documents(default_docs[:40], small_tokenizer)
    val = encode_documents(default_docs[40:44], small_tokenizer)
    tables = small_tokenizer.byte_tables()
    cfg = ModelConfig(vocab_size=small_tokenizer.vocab_size, d_model=32, n_heads=2, n_kv_heads=1, n_passes=2,
                      seq_len=32)
    res = train(cfg, TrainConfig(steps=60, batch_size=8, lr=1e-2, eval_every=1000, holdout_tokens=0), toks, val, tables,
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
    tc = TrainConfig(steps=5, batch_size=4, eval_every=1000, holdout_tokens=0)
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


def test_training_never_samples_the_routing_holdout():
    from core.train import holdout_split, sample_batch

    stream = np.arange(100_000, dtype=np.int64)                    # each value says where it came from
    kept = holdout_split(stream, 20_000, 16)
    assert len(kept) == 80_000 and np.array_equal(kept, stream[:80_000])
    gen = np.random.default_rng(0)
    for _ in range(50):
        x, y = sample_batch(kept, 64, 16, gen)
        assert int(x.max()) < 80_000 and int(y.max()) < 80_000     # nothing from the last 20,000 tokens
    assert holdout_split(stream, 0, 16) is stream
    with pytest.raises(ConfigError, match="--holdout-tokens"):
        holdout_split(stream, 40_000, 16)                          # fewer than twice the hold-out would remain
    with pytest.raises(ConfigError, match="--holdout-tokens -1"):
        TrainConfig(steps=1, holdout_tokens=-1)
