"""Pack -> read -> dequantize reproduces exactly the dequantized tensors, for every format."""

import numpy as np
import pytest
import torch

from core.config import ModelConfig
from core.model import RecurrentLM
from packer.errors import BudgetError
from packer.reader import read_artifact
from quant import formats
from quant.pack import PackOptions, pack_tensors
from verify.load import artifact_tensors, build_model

CFG = ModelConfig(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, n_passes=2, seq_len=16)


def model_tensors():
    torch.manual_seed(0)
    m = RecurrentLM(CFG)
    return {k: v.detach().numpy() for k, v in m.state_dict().items()}


def body():
    return {"model": {"family": "recurrent", "config": CFG.to_dict()},
            "routing": {"policy": "uniform", "passes": 2}, "tokenizer": {"sha256": None, "vocab_size": 64}}


@pytest.mark.parametrize("matrix_format", ["fp32", "fp16", "bf16", "int8_row", "int6_row", "int4_row",
                                           "int3_row"])
def test_round_trip_bit_exact(matrix_format):
    tensors = model_tensors()
    opts = PackOptions(matrix_format=matrix_format)
    res = pack_tensors(tensors, body(), opts)
    art = read_artifact(res.data)
    got = artifact_tensors(art)
    for name, w in tensors.items():
        enc = formats.encode(w, res.plan[name])
        want = formats.decode(res.plan[name], enc.arrays, w.shape)
        assert np.array_equal(got[name], want), name
    model = build_model(art)
    x = torch.randint(0, 64, (1, 16))
    assert model(x).shape == (1, 16, 64)


def test_plan_int8_embedding_int6_matrices_float_controls():
    res = pack_tensors(model_tensors(), body(), PackOptions())
    assert res.plan["tok_emb.weight"] == "int8_row"
    assert res.plan["blocks.0.attn.c_q.weight"] == "int6_row"
    assert res.plan["blocks.0.attn_norm.weight"] == "fp16"
    assert res.plan["pass_emb"] == "fp16"


def test_same_input_same_bytes():
    t = model_tensors()
    assert pack_tensors(t, body(), PackOptions()).data == pack_tensors(t, body(), PackOptions()).data


def test_budget_refused_with_numbers():
    with pytest.raises(BudgetError, match="exceeds the budget"):
        pack_tensors(model_tensors(), body(), PackOptions(budget_bytes=1000))


def test_int_codes_in_range_and_zero_rows():
    w = np.zeros((3, 5), np.float32)
    w[1] = [1, -2, 3, -4, 5]
    enc = formats.encode(w, "int4_row")
    assert enc.arrays["codes"][0].tolist() == [0] * 5 and float(enc.arrays["scales"][0]) == 0.0
    assert np.abs(enc.arrays["codes"]).max() <= 7
    assert np.allclose(formats.decode("int4_row", enc.arrays, w.shape)[1], w[1], atol=5 / 7 / 2 + 1e-3)
