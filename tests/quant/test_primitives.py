"""quant.primitives against the slow numpy reference (quant.reference): bit-exact codes, scales and clips."""

import numpy as np
import pytest

from common.errors import QuantError
from quant import primitives as P
from quant import reference as R


def cases():
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((6, 70)) * 0.05).astype(np.float32)
    w[0] = 0.0                                   # all-zero row
    w[1] = 0.3                                   # constant row
    w[2] = -1e-6                                 # constant tiny row (fp16 subnormal scale)
    w[3, ::7] = 0.9                              # outliers
    heavy = (rng.standard_t(2, size=(4, 33)) * 0.02).astype(np.float32)
    return {"mixed": w, "one_col": w[:, :1].copy(), "heavy": heavy, "one_row": heavy[:1].copy(),
            "zeros": np.zeros((3, 5), np.float32), "empty": np.zeros((2, 0), np.float32)}


GROUPS = [None, 32, 64]
BITS = [2, 3, 4, 5, 6, 7, 8]


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("name", list(cases()))
@pytest.mark.parametrize("group", GROUPS)
def test_absmax_quantize_dequantize_bit_exact(name, group):
    w = cases()[name]
    clip = P.absmax_clip(w, group)
    assert same(clip, R.absmax(w, group))
    for bits in BITS:
        codes, scales = P.quantize_groups(w, bits, group)
        ref_codes, ref_scales = R.quantize(w, bits, group, R.absmax(w, group))
        assert same(codes, ref_codes) and same(scales, ref_scales), (bits, group)
        assert same(P.dequantize(codes, scales, group), R.dequantize(ref_codes, ref_scales, group))
        assert np.abs(codes).max(initial=0) <= P.qmax_for_bits(bits)


@pytest.mark.parametrize("name", list(cases()))
@pytest.mark.parametrize("group", GROUPS)
def test_clip_choices_bit_exact(name, group):
    w = cases()[name]
    weights = np.random.default_rng(1).random(w.shape[1]) + 0.1
    assert same(P.absmean_clip(w, group), R.absmean(w, group))
    grid = P.CLIP_FRACTIONS if name in ("heavy", "one_row") else P.CLIP_FRACTIONS[::5]   # the reference is slow
    for bits in (3, 4, 6, 8):
        assert same(P.clip_search(w, bits, group, grid), R.clip_search(w, bits, group, grid)), bits
        assert same(P.clip_search(w, bits, group, grid, weights), R.clip_search(w, bits, group, grid, weights)), bits
        assert same(P.sdclip_clip(w, bits, group), R.sdclip(w, bits, group, P.SDCLIP_K[bits])), bits
        assert same(P.sdclip_clip(w, bits, group, 1.7), R.sdclip(w, bits, group, 1.7)), bits


def test_special_rows_decode_sensibly():
    w = cases()["mixed"]
    codes, scales = P.quantize_groups(w, 4, None)
    assert not codes[0].any() and float(scales[0, 0]) == 0.0                 # all-zero row: zero codes, scale 0
    assert set(codes[1].tolist()) == {7} and P.dequantize(codes, scales)[1, 0] == pytest.approx(0.3, rel=1e-3)
    assert float(scales[2, 0]) > 0 and set(codes[2].tolist()) == {-7}         # subnormal fp16 scale still works
    one = cases()["one_col"]
    c1, s1 = P.quantize_groups(one, 6, None)
    assert np.allclose(P.dequantize(c1, s1), one, rtol=2e-3, atol=1e-7)     # 1-element rows are exact-ish


def test_clip_search_never_worse_than_absmax():
    w = cases()["heavy"]
    for bits in (3, 4, 5):
        amax = P.absmax_clip(w)
        best = P.clip_search(w, bits)
        def err(clip, bits=bits):
            return P.weighted_sq_error(w, P.dequantize(*P.quantize_groups(w, bits, None, clip)), None)
        assert np.all(err(best) <= err(amax)) and np.any(err(best) < err(amax))


def test_scale_overflow_and_bad_input_raise():
    with pytest.raises(QuantError, match="fp16"):
        P.quantize_groups(np.full((1, 3), 1e9, np.float32), 3)
    with pytest.raises(QuantError, match="NaN"):
        P.quantize_groups(np.array([[np.nan]], np.float32), 4)
    with pytest.raises(QuantError):
        P.qmax_for_bits(9)


def test_nf4_code_book_and_decode_match_bitsandbytes():
    torch = pytest.importorskip("torch")
    bnbf = pytest.importorskip("bitsandbytes.functional")
    from quant import formats

    assert np.array_equal(P.NF4_CODE, bnbf.get_4bit_type("nf4", device="cpu").numpy())
    w = (np.random.default_rng(3).standard_normal((5, 27)) * 0.1).astype(np.float32)    # 135: odd, ragged
    for fmt, block in (("nf4_g64", 64), ("nf4_g32", 32)):
        enc = formats.encode(w, fmt)
        got = formats.decode(fmt, enc.arrays, w.shape)
        packed, state = bnbf.quantize_4bit(torch.from_numpy(w.ravel().copy()), blocksize=block, quant_type="nf4")
        state.absmax = torch.from_numpy(enc.arrays["scales"].astype(np.float32))     # the stored fp16 maxima
        assert np.array_equal(got, bnbf.dequantize_4bit(packed, state).numpy().reshape(w.shape))
        ref = R.nf4_decode(enc.arrays["codes"], enc.arrays["scales"], w.size, block, P.NF4_CODE)
        assert np.array_equal(got.ravel(), ref)


def test_nf4_encoder_equals_bitsandbytes_bit_for_bit():
    torch = pytest.importorskip("torch")
    bnbf = pytest.importorskip("bitsandbytes.functional")
    rng = np.random.default_rng(1)
    for trial in range(60):
        n, block = int(rng.integers(1, 3000)), int(rng.choice([32, 64, 128, 256]))
        flat = (rng.standard_t(3, n) * 0.1).astype(np.float32)
        if trial % 7 == 0:
            flat[: min(n, block)] = 0                                    # an all-zero block
        packed, state = bnbf.quantize_4bit(torch.from_numpy(flat.copy()), blocksize=block, quant_type="nf4")
        codes, absmax = P.nf4_quantize(flat, block)
        assert np.array_equal(codes, packed.numpy().reshape(-1)) and np.array_equal(absmax, state.absmax.numpy())
