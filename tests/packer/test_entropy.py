"""ANS entropy models: near the order-0 bound with model bytes counted, below it where rows/columns differ,
exact and deterministic, and corrupt blobs rejected with CodecError instead of wrong codes."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import CodecError
from packer import codecs
from packer.entropy import codec as ans_codec
from packer.entropy import encode as ans_encode
from packer.entropy import fit as entropy_fit
from packer.entropy import models as em
from packer.entropy import param as ans_param


def _params(codes: np.ndarray, bits: int) -> dict:
    return {"dtype": "int8", "shape": list(codes.shape), "bits": bits}


def _quant(w: np.ndarray, bits: int) -> np.ndarray:
    """Per-row round-to-nearest at the row absmax (the bench uses quant.primitives; packer tests do not)."""
    qmax = (1 << (bits - 1)) - 1
    scale = np.abs(w).max(1, keepdims=True) / qmax
    return np.clip(np.rint(w / np.where(scale > 0, scale, 1)), -qmax, qmax).astype(np.int8)


def _encode(codes: np.ndarray, bits: int, prefer: str = "size") -> bytes:
    return codecs.encode("ans", codes.tobytes(), dict(_params(codes, bits), prefer=prefer))


def _decode(stored: bytes, codes: np.ndarray, bits: int) -> np.ndarray:
    raw = codecs.decode("ans", stored, codes.size, _params(codes, bits))
    return np.frombuffer(raw, np.int8).reshape(codes.shape)


def test_order0_entropy_bits_known_values():
    assert em.order0_entropy_bits(np.array([0, 1, 0, 1])) == pytest.approx(4.0)
    assert em.order0_entropy_bits(np.full(10, 3)) == 0.0
    assert em.order0_entropy_bits(np.zeros(0)) == 0.0
    assert em.order0_entropy_bits(np.array([0, 0, 1, 2])) == pytest.approx(6.0)


@pytest.mark.parametrize("bits", [8, 6, 4])
def test_iid_codes_land_within_0p1_percent_of_order0_plus_model(bits):
    rng = np.random.default_rng(bits)
    codes = _quant(rng.standard_normal((256, 256)), bits)
    stored = _encode(codes, bits)
    d = ans_codec.describe(stored, _params(codes, bits))
    h0 = em.order0_entropy_bits(codes) / 8
    assert 0 < d["model_bytes"] < len(stored)
    assert len(stored) <= 1.001 * (h0 + d["model_bytes"])
    assert np.array_equal(_decode(stored, codes, bits), codes)


def test_model_bytes_are_inside_the_section():
    rng = np.random.default_rng(0)
    codes = _quant(rng.standard_normal((64, 300)), 6)
    codes = np.where(codes >= 0, 20, -20).astype(np.int8) + np.clip(codes // 8, -3, 3).astype(np.int8)   # bimodal
    stored = _encode(codes, 6, prefer="speed")            # no parametric shape fits: a stored table per context
    d = ans_codec.describe(stored, _params(codes, 6))
    assert d["model"].startswith("grid") and "tables" in d["model"]
    assert d["header_bytes"] >= 10                          # the histogram really is stored in the blob
    assert (len(stored) - d["header_bytes"]) % 4 == 0      # the rest is whole ANS words
    assert d["model_bytes"] == d["header_bytes"] + -(-d["side_bits"] // 8)
    # the histogram is what the decoder uses: a blob without it cannot be decoded
    with pytest.raises(CodecError):
        _decode(stored[:1] + stored[d["header_bytes"]:], codes, 6)


def test_rows_of_different_spread_go_below_order0():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((256, 256))
    w[:, 0] = np.exp(rng.uniform(np.log(3), np.log(30), 256))   # one outlier per row sets the row's absmax
    codes = _quant(w, 6)                                          # so rows differ in spread in code units
    stored = _encode(codes, 6)
    d = ans_codec.describe(stored, _params(codes, 6))
    h0 = em.order0_entropy_bits(codes) / 8
    assert "row" in d["model"] or d["model"].startswith("tables")
    assert len(stored) < 0.95 * h0
    assert np.array_equal(_decode(stored, codes, 6), codes)


def test_columns_of_different_spread_use_column_parameters():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((128, 256)) * np.exp(rng.uniform(-2, 1, (1, 256)))
    codes = _quant(w, 6)
    stored = _encode(codes, 6)
    d = ans_codec.describe(stored, _params(codes, 6))
    assert "colsigma" in d["model"]
    assert len(stored) < 0.9 * em.order0_entropy_bits(codes) / 8
    assert np.array_equal(_decode(stored, codes, 6), codes)


def test_near_copy_rows_are_predicted_from_earlier_rows():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((200, 128))
    for g in range(6):                                       # six families of near-identical rows, scattered
        rows = np.arange(20 + g, 200, 6)[:12]
        w[rows] = rng.standard_normal(128) + 0.03 * rng.standard_normal((rows.size, 128))
    codes = _quant(w, 6)
    stored = _encode(codes, 6)
    d = ans_codec.describe(stored, _params(codes, 6))
    assert "refs" in d["model"]
    assert len(stored) < 0.8 * em.order0_entropy_bits(codes) / 8
    assert np.array_equal(_decode(stored, codes, 6), codes)


def test_constriction_tail_mass_goes_to_the_boundary_symbols():
    """The fitter's cost table must match what constriction really codes (tails lumped, not renormalised)."""
    rng = np.random.default_rng(4)
    x = np.clip(np.rint(rng.standard_normal(20000) * 20), -31, 31).astype(np.int8)[None, :]
    cm = entropy_fit.CostModel(x, -31, 31, "gauss")
    k = 35                                                  # sigma = 2^(35/8) ~ 20.7
    predicted = cm.total_bits(np.array([k]), np.zeros(x.shape[1], np.int64), np.zeros(x.shape[1], np.int64))
    pf = ans_param.ParamFit("gauss", np.array([k]))
    real_bytes = len(ans_encode.encode_param(x, -31, 31, pf)) - 7
    assert abs(real_bytes * 8 - predicted) < 0.002 * predicted


def test_same_input_gives_identical_bytes():
    rng = np.random.default_rng(5)
    codes = _quant(rng.standard_normal((96, 80)) * np.exp(rng.standard_normal((96, 1))), 5)
    assert _encode(codes, 5) == _encode(codes.copy(), 5)


def test_corrupted_ans_section_is_caught_by_its_checksum():
    from artifact_kit import reseal_sha, small_body, small_sections

    from common.errors import ChecksumError
    from packer.reader import parse_artifact
    from packer.writer import SectionSpec, build_artifact

    rng = np.random.default_rng(7)
    sections = small_sections()
    codes = _quant(rng.standard_normal((4, 8)), 6)
    sections[1] = SectionSpec("w/codes", codes.tobytes(), "ans", _params(codes, 6))
    data = build_artifact(small_body(), sections)
    art = parse_artifact(data)
    assert art.raw("w/codes") == codes.tobytes()
    entry = art.section("w/codes")
    for pos in range(entry.offset, entry.offset + entry.stored_bytes):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(ChecksumError, match="w/codes"):
            parse_artifact(reseal_sha(bytes(bad)))           # even with the whole-file SHA-256 made right


@pytest.mark.parametrize("kind", ["size", "speed"])
def test_corrupted_blob_is_rejected_structurally_or_decodes_to_the_declared_size(kind):
    """Behind the CRC, the blob's own checks (field bounds, exact end of the ANS stream) reject most damage;
    what gets through is still exactly shape-sized codes within the declared width, never a crash."""
    rng = np.random.default_rng(6)
    codes = _quant(rng.standard_normal((40, 64)) * np.exp(rng.standard_normal((40, 1))), 6)
    codes[20:30] = codes[5]                                  # give the size model refs to store too
    stored = _encode(codes, 6, prefer=kind)
    positions = sorted(set(np.linspace(0, len(stored) - 1, 120).astype(int).tolist()))
    rejected = tried = 0
    for pos in positions:
        for flip in (0x01, 0x80):
            bad = bytearray(stored)
            bad[pos] ^= flip
            tried += 1
            try:
                out = _decode(bytes(bad), codes, 6)
            except CodecError:
                rejected += 1
                continue
            assert out.shape == codes.shape and np.abs(out.astype(int)).max() <= 31
    assert rejected >= 0.9 * tried
    for cut in (1, 3, 4, len(stored) // 2):
        with pytest.raises(CodecError):
            _decode(stored[:-cut], codes, 6)
    with pytest.raises(CodecError):
        _decode(stored + b"\x01\x00\x00\x00", codes, 6)


def test_constant_blob_guards_its_value():
    codes = np.full((4, 4), 3, np.int8)
    stored = _encode(codes, 4)
    assert len(stored) == 3
    with pytest.raises(CodecError):
        _decode(bytes([stored[0], stored[1] ^ 1, stored[2]]), codes, 4)


def test_crafted_headers_are_rejected_by_field():
    codes = np.zeros((4, 4), np.int8)
    p = _params(codes, 4)
    for blob, field in [(b"\x09", "model"), (bytes([1, 128 - 9, 128 + 9]), "range"),
                        (bytes([1, 125, 131, 0]), "tables.count"), (bytes([1, 125, 131, 200]), "tables.count"),
                        (bytes([2, 125, 131, 7]), "param.shape"), (bytes([2, 125, 131, 0, 0x40]), "param.flags"),
                        (bytes([1, 125, 131, 1, 0, 1, 0, 0x81, 0x00]), "shortest form")]:
        with pytest.raises(CodecError, match=field):
            codecs.decode("ans", blob, 16, p)


def test_describe_section_names_generic_codecs_without_a_model():
    codes = np.ones((3, 3), np.int8)
    stored = codecs.encode("zstd", codes.tobytes(), _params(codes, 8))
    assert ans_codec.describe_section("zstd", stored, _params(codes, 8)) == {
        "model": "zstd", "model_bytes": None, "header_bytes": None, "side_bits": None}
    assert ans_codec.describe_section("ans", _encode(codes, 8), _params(codes, 8))["model"] == "const"


def test_describe_needs_a_shape_or_raw_length():
    codes = np.ones((3, 3), np.int8)
    stored = _encode(codes, 8)
    assert ans_codec.describe(stored, {"dtype": "int8", "bits": 8}, raw_len=9)["model"] == "const"
    with pytest.raises(CodecError, match="shape"):
        ans_codec.describe(stored, {"dtype": "int8"})


def test_real_trained_weights_int6_beat_brotli_shuffle(shared_data):
    torch = pytest.importorskip("torch")
    path = shared_data / "pgolf" / "nolanvild" / "final_model.pt"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    names = ["tok_emb.weight", "blocks.0.mlp.proj.weight"]
    ours = theirs = 0
    for name in names:
        codes = _quant(sd[name].float().numpy(), 6)
        ours += len(_encode(codes, 6))
        theirs += len(codecs.encode("brotli-shuffle", codes.tobytes(), _params(codes, 6)))
    assert ours < 0.99 * theirs
