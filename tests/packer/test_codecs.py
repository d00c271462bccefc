"""Every registered codec round-trips exactly, deterministically, on random and edge inputs."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import CodecError
from packer import codecs


def _params(codes: np.ndarray, bits: int) -> dict:
    return {"dtype": "int8", "shape": list(codes.shape), "bits": bits}


def _gauss(shape, bits, std, seed=0):
    qmax = (1 << (bits - 1)) - 1
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(rng.standard_normal(shape) * std), -qmax, qmax).astype(np.int8)


def _edge_cases():
    cases = []
    for bits in (8, 6, 5, 4, 3, 2):
        qmax = (1 << (bits - 1)) - 1
        cases += [
            (f"random-int{bits}", _gauss((37, 53), bits, qmax / 2.5, bits), bits),
            (f"1x1-int{bits}", np.array([[qmax]], np.int8), bits),
            (f"1xN-int{bits}", _gauss((1, 300), bits, qmax / 3, 7), bits),
            (f"Nx1-int{bits}", _gauss((300, 1), bits, qmax / 3, 8), bits),
            (f"all-equal-int{bits}", np.full((20, 30), -qmax, np.int8), bits),
            (f"extremes-int{bits}", np.where(np.arange(600).reshape(20, 30) % 3 == 0, qmax, -qmax)
             .astype(np.int8), bits),
            (f"uniform-int{bits}", np.random.default_rng(bits).integers(-qmax, qmax + 1, (16, 40))
             .astype(np.int8), bits),
        ]
    cases += [("empty-rows", np.zeros((0, 7), np.int8), 6), ("empty-cols", np.zeros((5, 0), np.int8), 6),
              ("ternary-sparse", np.random.default_rng(3).choice([-1, 0, 0, 0, 1], (64, 64)).astype(np.int8), 2)]
    return cases


EDGE = _edge_cases()
# generic byte codecs do not look at `bits`: a few widths suffice for them; ans gets every case
CASES = [(codec, *case) for codec in codecs.names() for case in EDGE
         if codec == "ans" or case[2] in (8, 2) or case[1].size == 0]


def test_registry_has_every_codec_of_the_issue():
    assert {"raw", "zstd", "lzma", "brotli", "brotli-shuffle", "ans"} <= set(codecs.names())


@pytest.mark.parametrize("codec,name,codes,bits", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_round_trip_exact_and_deterministic(codec, name, codes, bits):
    p = _params(codes, bits)
    raw = codes.tobytes()
    stored = codecs.encode(codec, raw, p)
    assert codecs.decode(codec, stored, len(raw), p) == raw
    assert codecs.encode(codec, raw, p) == stored


@pytest.mark.parametrize("codec", codecs.names())
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "uint8"])
def test_round_trip_float_bytes(codec, dtype):
    rng = np.random.default_rng(5)
    vals = (rng.standard_normal(333) * 0.01).astype(np.float32)
    raw = {"float16": vals.astype(np.float16).tobytes(),
           "bfloat16": (vals.view(np.uint32) >> 16).astype(np.uint16).tobytes(), "float32": vals.tobytes(),
           "uint8": rng.integers(0, 256, 333).astype(np.uint8).tobytes()}[dtype]
    p = {"dtype": dtype, "shape": [333]}
    stored = codecs.encode(codec, raw, p)
    assert codecs.decode(codec, stored, len(raw), p) == raw


def test_ans_beats_raw_on_gaussian_codes_and_speed_option_round_trips():
    codes = _gauss((128, 128), 6, 6.0)
    p = _params(codes, 6)
    for prefer in ("size", "speed"):
        q = dict(p, prefer=prefer)
        stored = codecs.encode("ans", codes.tobytes(), q)
        assert len(stored) < 0.7 * codes.size
        assert codecs.decode("ans", stored, codes.size, q) == codes.tobytes()


def test_ans_rejects_codes_outside_the_declared_width_and_bad_params():
    codes = np.array([[40, -3]], np.int8)
    with pytest.raises(CodecError, match="bits=6"):
        codecs.encode("ans", codes.tobytes(), _params(codes, 6))
    with pytest.raises(CodecError, match="shape"):
        codecs.encode("ans", codes.tobytes(), {"dtype": "int8", "shape": [3, 3], "bits": 8})
    with pytest.raises(CodecError, match="bits"):
        codecs.encode("ans", codes.tobytes(), {"dtype": "int8", "shape": [1, 2], "bits": 9})
    with pytest.raises(CodecError, match="prefer"):
        codecs.encode("ans", codes.tobytes(), {"dtype": "int8", "shape": [1, 2], "prefer": "fast"})


def test_shuffle_groups_bytes_and_inverts():
    raw = bytes(range(12))
    assert codecs.shuffle(raw, 2) == bytes([0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11])
    assert codecs.unshuffle(codecs.shuffle(raw, 4), 4) == raw
    assert codecs.shuffle(raw, 1) == raw


def test_brotli_shuffle_helps_fp16_scales():
    scales = np.abs(np.random.default_rng(2).standard_normal(4096) * 0.01 + 0.03).astype(np.float16).tobytes()
    p = {"dtype": "float16", "shape": [4096]}
    assert len(codecs.encode("brotli-shuffle", scales, p)) < len(codecs.encode("brotli", scales, p))


@pytest.mark.parametrize("codec", ["brotli", "brotli-shuffle"])
def test_brotli_corrupt_or_wrong_length_raises(codec):
    raw = _gauss((64, 64), 8, 20.0).tobytes()
    p = {"dtype": "int8", "shape": [64, 64], "bits": 8}
    stored = codecs.encode(codec, raw, p)
    with pytest.raises(CodecError):
        codecs.decode(codec, stored[: len(stored) // 2], len(raw), p)
    with pytest.raises(CodecError):
        codecs.decode(codec, stored, len(raw) - 1, p)
    with pytest.raises(CodecError):
        codecs.decode(codec, b"\xff\xff\xff\xff" + stored[4:], len(raw), p)
