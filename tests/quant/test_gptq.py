"""GPTQ: the blocked sweep equals the unblocked reference, and it lowers the Hessian-weighted error vs RTN."""

import numpy as np
import pytest

from quant import primitives as P
from quant import reference as R
from quant.gptq import GPTQConfig, gptq_codes


def correlated(seed=0, rows=24, cols=48, n=600):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((cols, cols)) * 0.3 + np.eye(cols)
    x = rng.standard_normal((n, cols)) @ mix
    x[:, 5] = 0.0                                                   # a dead input column
    w = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    return w, x.T @ x


@pytest.mark.parametrize("group", [None, 16])
@pytest.mark.parametrize("act_order", [True, False])
def test_blocked_equals_reference(group, act_order):
    w, h = correlated()
    scales = P.scales_for_clip(P.clip_search(w, 4, group), 4)
    want = R.gptq(w, h, scales.reshape(len(w), -1), 4, group, 0.01, act_order)
    for block in (1, 7, 128):
        got = gptq_codes(w, h, scales, 4, group, GPTQConfig(block_size=block, act_order=act_order))
        assert np.array_equal(got, want), block


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_gptq_lowers_hessian_error_vs_rtn(bits):
    w, h = correlated(1)
    scales = P.scales_for_clip(P.clip_search(w, bits, weights=np.diag(h)), bits)
    rtn = P.dequantize(P.quantize_with_scales(w, scales, bits), scales)
    gq = P.dequantize(gptq_codes(w, h, scales, bits), scales)
    assert P.hessian_error(w, gq, h) < 0.8 * P.hessian_error(w, rtn, h)
    assert np.abs(gptq_codes(w, h, scales, bits)).max() <= P.qmax_for_bits(bits)
