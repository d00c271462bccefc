"""A tiny recurrent model with training shards beside it (and a garbage validation shard) for quant tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.checkpoint import save_checkpoint
from core.config import ModelConfig
from core.model import RecurrentLM
from core.shards import write_shard

TINY = ModelConfig(vocab_size=128, d_model=64, n_heads=4, n_kv_heads=2, n_passes=2, n_blocks=1, seq_len=32)


def tiny_model(seed: int = 0) -> RecurrentLM:
    torch.manual_seed(seed)
    m = RecurrentLM(TINY)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)       # away from init: distinct norms, non-trivial weights
    return m.eval()


def tiny_body() -> dict:
    return {"model": {"family": "recurrent", "config": TINY.to_dict()},
            "routing": {"policy": "uniform", "passes": TINY.n_passes},
            "tokenizer": {"sha256": None, "vocab_size": TINY.vocab_size}}


def tensors_of(model: RecurrentLM) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def tiny():
    """The tiny model's config and helpers (test modules cannot import conftest)."""
    return SimpleNamespace(cfg=TINY, model=tiny_model, body=tiny_body, tensors=tensors_of)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A folder with a checkpoint, a train shard, and a `_val_` file that is not a shard at all."""
    d = tmp_path_factory.mktemp("tinyq")
    rng = np.random.default_rng(0)
    # a learnable-ish stream: a noisy periodic pattern over the vocabulary
    base = (np.arange(20000) * 7) % TINY.vocab_size
    noise = rng.integers(0, TINY.vocab_size, size=base.shape)
    toks = np.where(rng.random(base.shape) < 0.3, noise, base).astype(np.uint16)
    write_shard(d / "tiny_train_000000.bin", toks)
    (d / "tiny_val_000000.bin").write_bytes(b"not a shard: calibration must never open this file")
    save_checkpoint(d / "tiny", tiny_model(), TINY, {"tokenizer_sha256": None})
    return d


@pytest.fixture(autouse=True)
def one_thread_for_quant(one_torch_thread):
    """Every quant test: see tests/conftest.py's one_torch_thread."""
    yield
