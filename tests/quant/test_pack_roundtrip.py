"""Pack -> read -> dequantize reproduces exactly the dequantized tensors, for every format and scale method."""

import numpy as np
import pytest
import torch

from common.errors import BudgetError
from core.config import ModelConfig
from core.model import RecurrentLM
from packer import constants as C
from packer.reader import read_artifact
from quant import formats
from quant.assemble import pack_tensors
from quant.options import PackOptions
from quant.unpack import artifact_tensors, build_model

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
        enc = res.encoded[res.aliases.get(name, name)]      # both RMSNorm weights are ones: stored once
        assert np.array_equal(got[name], formats.decode(res.plan[name], enc.arrays, w.shape)), name
        again = formats.encode(w, res.plan[name], method=res.scales.get(name))   # the recorded method re-derives it
        assert all(np.array_equal(again.arrays[k], enc.arrays[k]) for k in enc.arrays), name
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


def test_every_format_and_method_round_trips_through_one_artifact():
    rng = np.random.default_rng(0)
    tensors, plan, methods = {}, {}, {}
    for i, fmt in enumerate(sorted(C.TENSOR_FORMATS)):
        shape = (3, 5, 40) if i % 3 == 0 else (12, 70)          # 3-D tensors are R = shape[0] rows too
        for method in formats.get(fmt).scale_methods or (None,):
            name = f"t{i:02d}_{fmt}_{method}"
            tensors[name] = (rng.standard_normal(shape) * 0.05).astype(np.float32)
            tensors[name].reshape(shape[0], -1)[0] = 0.0          # an all-zero row in every tensor
            plan[name], methods[name] = fmt, method
    encoded = {n: formats.encode(w, plan[n], method=methods[n]) for n, w in tensors.items()}
    res = pack_tensors(tensors, body(), PackOptions(), plan, encoded=encoded)
    art = read_artifact(res.data)
    got = artifact_tensors(art)
    entries = {t["name"]: t for t in art.manifest["tensors"]}
    for name, w in tensors.items():
        want = formats.decode(plan[name], encoded[name].arrays, w.shape)
        assert got[name].shape == w.shape and np.array_equal(got[name], want), name
        assert entries[name]["format"] == plan[name] and entries[name].get("scale") == methods[name], name
        if formats.get(plan[name]).uses_gptq and formats.get(plan[name]).bits >= 6:
            assert np.linalg.norm(got[name] - w) < 0.05 * np.linalg.norm(w), name   # and it is close to w


def test_scale_method_in_manifest_is_validated():
    from common.errors import SchemaError
    from packer.manifest import validate_manifest

    res = pack_tensors(model_tensors(), body(), PackOptions())
    man = read_artifact(res.data).manifest
    assert {t.get("scale") for t in man["tensors"] if t.get("format", "").startswith("int")} <= C.SCALE_METHODS
    next(t for t in man["tensors"] if "scale" in t)["scale"] = "magic"
    with pytest.raises(SchemaError, match="scale"):
        validate_manifest(man)
