"""Shapes, causality, parameter sharing and the sparse extra pass of the recurrent core."""

import pytest
import torch

from common.errors import ConfigError
from core.config import ModelConfig
from core.model import RecurrentLM

TINY = ModelConfig(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, n_passes=3, seq_len=16)


def test_shapes_and_exits():
    torch.manual_seed(0)
    m = RecurrentLM(TINY)
    x = torch.randint(0, 64, (2, 16))
    assert m(x).shape == (2, 16, 64)
    ex = m.forward_exits(x)
    assert ex.h_prev.shape == ex.h_k.shape == (2, 16, 32)
    assert torch.equal(ex.logits, m(x))
    assert torch.allclose(m.extra_pass(ex.h_k), m(x, n_passes=4), atol=1e-6)


def test_causality_future_token_leaves_earlier_logits_unchanged():
    torch.manual_seed(0)
    m = RecurrentLM(TINY)
    x = torch.randint(0, 64, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % 64
    a, b = m(x), m(y)
    assert torch.equal(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_one_shared_block_versus_static():
    shared = RecurrentLM(TINY)
    static = RecurrentLM(ModelConfig(**{**TINY.to_dict(), "n_blocks": 3}))
    assert len(shared.blocks) == 1 and len(static.blocks) == 3
    block_params = sum(p.numel() for p in shared.blocks[0].parameters())
    assert static.num_parameters() - shared.num_parameters() == 2 * block_params


def test_sparse_extra_pass_equals_dense():
    torch.manual_seed(1)
    m = RecurrentLM(TINY)
    x = torch.randint(0, 64, (3, 16))
    ex = m.forward_exits(x)
    dense = m.extra_pass(ex.h_k)
    rows = torch.tensor([0, 0, 1, 2, 2])
    pos = torch.tensor([0, 15, 7, 3, 9])
    sparse = m.extra_pass_selected(ex.h_k, rows, pos)
    assert (sparse - dense[rows, pos]).abs().max().item() < 1e-5


def test_config_validation_names_field():
    with pytest.raises(ConfigError, match="--n-kv-heads 3"):
        ModelConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ConfigError, match="unknown fields"):
        ModelConfig.from_dict({**TINY.to_dict(), "bogus": 1})
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY
