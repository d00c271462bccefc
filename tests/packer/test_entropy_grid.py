"""The fast ANS models (grid, model 3; grid-refs, model 4): exact round trips of every variant, bytes that do not
depend on the run, weights pinned bit for bit, older blobs still readable, and hostile headers rejected with
CodecError by field."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import CodecError
from packer import codecs
from packer.entropy import blob as io
from packer.entropy import codec as ans_codec
from packer.entropy import encode as enc
from packer.entropy import grid
from packer.entropy import grid_encode as genc
from packer.entropy import models as em
from packer.entropy import refs as ans_refs

ROOT = Path(__file__).resolve().parents[2]


def _params(codes: np.ndarray, bits: int) -> dict:
    return {"dtype": "int8", "shape": list(codes.shape), "bits": bits}


def _quant(w: np.ndarray, bits: int) -> np.ndarray:
    qmax = (1 << (bits - 1)) - 1
    scale = np.abs(w).max(1, keepdims=True) / qmax
    return np.clip(np.rint(w / np.where(scale > 0, scale, 1)), -qmax, qmax).astype(np.int8)


def _round_trip(codes: np.ndarray, bits: int, prefer: str | None = None) -> tuple[bytes, dict]:
    p = _params(codes, bits) if prefer is None else dict(_params(codes, bits), prefer=prefer)
    stored = codecs.encode("ans", codes.tobytes(), p)
    back = np.frombuffer(codecs.decode("ans", stored, codes.size, _params(codes, bits)), np.int8)
    assert np.array_equal(back.reshape(codes.shape), codes)
    return stored, ans_codec.describe(stored, _params(codes, bits))


def _rows_and_cols(rng, shape, row_spread=0.6, col_spread=0.6):
    return (rng.standard_normal(shape) * np.exp(row_spread * rng.standard_normal((shape[0], 1)))
            * np.exp(col_spread * rng.standard_normal((1, shape[1]))))


def _cases():
    rng = np.random.default_rng(0)
    flat = _quant(rng.standard_normal((40, 50)), 6)
    spread = _quant(_rows_and_cols(rng, (96, 80)), 6)                              # rows + columns, g = 2
    int4 = _quant(_rows_and_cols(rng, (64, 96)), 4)                                # g = 3
    int3 = _quant(_rows_and_cols(rng, (64, 80)), 3)                                # g = 4
    int8 = _quant(_rows_and_cols(rng, (48, 40)), 8)                                # g = 1, wide alphabet
    clipped = np.clip(np.rint(rng.standard_normal((80, 64)) * 14), -31, 31).astype(np.int8)   # tails lumped
    bimodal = np.where(rng.random((64, 80)) < 0.5, -20, 20).astype(np.int8) + rng.integers(-2, 3, (64, 80)).astype(np.int8)
    one_row = _quant(rng.standard_normal((1, 300)), 6)
    one_col = _quant(rng.standard_normal((300, 1)) * np.exp(rng.standard_normal((300, 1))), 6)
    positive = np.abs(_quant(rng.standard_normal((30, 40)), 5)).astype(np.int8)    # lo >= 0
    negative = -positive - 1
    two_values = rng.integers(0, 2, (16, 16)).astype(np.int8) - 1
    return [("flat", flat, 6), ("spread", spread, 6), ("int4", int4, 4), ("int3", int3, 3), ("int8", int8, 8),
            ("clipped", clipped, 6), ("bimodal", bimodal, 6), ("one_row", one_row, 6), ("one_col", one_col, 6),
            ("positive", positive, 5), ("negative", negative, 6), ("two_values", two_values, 2)]


@pytest.mark.parametrize("name,codes,bits", _cases(), ids=[c[0] for c in _cases()])
def test_grid_round_trips_every_variant(name, codes, bits):
    stored, d = _round_trip(codes, bits)
    assert d["model"].startswith("grid")
    assert (len(stored) - d["header_bytes"]) % 4 == 0
    assert d["model_bytes"] == d["header_bytes"] + -(-d["side_bits"] // 8)
    expect = {"spread": ("row", "col", "x2"), "int4": ("x3",), "int3": ("x4",), "bimodal": ("tables",)}
    for part in expect.get(name, ()):
        assert part in d["model"], (name, d["model"])
    size, _ = _round_trip(codes, bits, "size")
    assert len(size) <= len(stored)


def test_the_default_is_the_fast_model_and_beats_order0_where_rows_and_columns_differ():
    rng = np.random.default_rng(1)
    codes = _quant(_rows_and_cols(rng, (256, 256), 0.8, 0.8), 6)
    stored = codecs.encode("ans", codes.tobytes(), _params(codes, 6))
    assert stored[0] == io.MODEL_GRID
    assert stored == codecs.encode("ans", codes.tobytes(), dict(_params(codes, 6), prefer="speed"))
    assert len(stored) < 0.95 * em.order0_entropy_bits(codes) / 8


def _embedding(rng, rows=256, cols=64, bits=8):
    w = rng.standard_normal((rows, cols))
    for g in range(8):                                   # families of near-identical rows, some chained
        members = np.arange(g + 10, rows, 29)[:6]
        w[members] = w[g] * rng.uniform(0.6, 1.4, (members.size, 1)) + 0.05 * rng.standard_normal((members.size, cols))
    return _quant(w, bits)


def test_near_copy_rows_use_grid_refs_and_round_trip():
    rng = np.random.default_rng(2)
    codes = _embedding(rng)
    stored, d = _round_trip(codes, 8)
    assert stored[0] == io.MODEL_REFS and d["model"].startswith("refs")
    plain = enc._grid_blob(codes)
    assert len(stored) < 0.95 * len(plain)


def test_grid_refs_residuals_wrap_and_chains_decode_in_waves():
    rng = np.random.default_rng(3)
    codes = _quant(rng.standard_normal((12, 40)), 6)
    R = codes.shape[0]
    parent = np.full(R, -1, np.int64)
    parent[[3, 5, 7, 9, 11]] = [0, 3, 5, 7, 2]          # a chain 0 -> 3 -> 5 -> 7 -> 9: four waves after the base
    refs = ans_refs.Refs(parent, np.array([64, 1, 40, 64, 16]))   # x4 gains: clipped predictions, wrapped residuals
    lo, hi = int(codes.min()), int(codes.max())
    resid = genc.residuals(codes, refs, lo, hi)
    assert np.abs(resid.astype(int)).max() > (hi - lo + 1) // 4
    blob = genc.encode_parts(refs, enc._grid_blob(codes[parent < 0]), enc._grid_blob(resid), lo, hi)
    assert np.array_equal(em.decode_codes(blob, R, 40, (-31, 31)), codes)
    assert len(ans_refs.waves(parent)) == 4


def test_bytes_do_not_depend_on_alignment_threads_or_hash_seed():
    rng = np.random.default_rng(4)
    codes = _quant(_rows_and_cols(rng, (200, 120)), 6)
    emb = _embedding(rng, 128, 48, 6)
    ref = [em.encode_codes(c) for c in (codes, emb)]
    for c, r in zip((codes, emb), ref):
        shifted = np.frombuffer(b"\x00" + c.tobytes(), np.int8, offset=1).reshape(c.shape)   # unaligned copy
        assert em.encode_codes(shifted) == r
    script = ("import sys, hashlib, numpy as np; from packer.entropy import models as em; "
              "a = np.frombuffer(bytes.fromhex(sys.argv[1]), np.int8).reshape(200, 120); "
              "b = np.frombuffer(bytes.fromhex(sys.argv[2]), np.int8).reshape(128, 48); "
              "print(hashlib.sha256(em.encode_codes(a) + em.encode_codes(b)).hexdigest())")
    want = hashlib.sha256(ref[0] + ref[1]).hexdigest()
    for seed, threads in (("1", "1"), ("12345", "2")):
        env = dict(os.environ, PYTHONHASHSEED=seed, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
                   MKL_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", script, codes.tobytes().hex(), emb.tobytes().hex()], env=env,
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        assert out == want


def test_parametric_weights_are_pinned_bit_for_bit():
    """The decoder rebuilds these floats; any platform computing them differently would misread blobs."""
    pinned = {(-31, 31): "82c6709baf4cb41ee267a88022227f0b03ea68c2d82daf371f4f82d7358d7200",
              (-127, 127): "0a93b7911d2e5e05bd29a0583c12763a3eff975709d3d9b8bebbced880e2e477",
              (0, 5): "8d219a96c6a0001af007d9fc377fa4f555f295f7c41d7056be4747574626f110"}
    for (lo, hi), digest in pinned.items():
        assert hashlib.sha256(grid.shape_weights(lo, hi).tobytes()).hexdigest() == digest


# Blobs written by golfpack before the grid models (commit 7de16f3): they must keep decoding to these codes.
OLD_CODES = bytes.fromhex(
    "000505fefffe020003f9060003ffff0203ffff02fdfa01fef9fdfefcfb0003fffd0203ff0204fffd010104fbfdfdf90102fd0503"
    "020204fb0202f901ff03fe0001fd020002fe0402ff020507fa030200fd04fc0205fafffb010507fafe02050103ffff02fdfa01fe"
    "f9fdfefcfb0003ff03ffff02fdfa01fef9fdfefcfb0003ff03ffff02fdfa01fef9fdfefcfb0003fffe0001fffa00010402fefe07"
    "020607fd020203030101f9fffd01fe0304010100fefffd020003f905fcfcfffd02fdfafc")
OLD_BLOBS = {
    "tables": "017987010103000e7c290d000006cfcc9f28b2d450b637d663f49e41513c6b86783c5538bee5c672f76f2d4be0d771d168c77b"
              "89be37e14b4acaac0c20fc67da520de2b254e3c79b88d59bdb87affd14c84ac4bf2406a925ba1767b21ab4808295bf468654"
              "5b2de900",
    "param-gauss": "02798700001e001d147904be27d3456ba0c1851b5255a8f0c47264987531cd98a4cf16a4d107cd055266c4fce890edb2"
                   "52e5a094e558c781bba8cfa88bd53c9cf1579213d7ad8fec922e4ffaec66c35712406ee0a05c22c81300075faf85a9ff"
                   "10d789",
    "param-laplace": "027987010018008fdcd3bcbe47e153ed1fce346c4dfa8d8c5cb48f66572e783f9c5e2c211c07655058d062ce4542c4"
                     "6054a6c9057da2890a0332258fa756d89a7671026f63e2a038c40a05a8a34d8d78a978abfabd0f8ada39d7a6c6443ec1"
                     "821d80ed35080000",
}


@pytest.mark.parametrize("name", sorted(OLD_BLOBS))
def test_blobs_of_the_older_models_still_decode(name):
    codes = np.frombuffer(OLD_CODES, np.int8).reshape(12, 16)
    raw = codecs.decode("ans", bytes.fromhex(OLD_BLOBS[name]), codes.size, _params(codes, 4))
    assert raw == OLD_CODES


# --- hostile blobs -------------------------------------------------------------------------------------------
def _w(*parts) -> bytes:
    w = io.BlobWriter()
    for kind, v in parts:
        if kind == "u8":
            w.u8(v)
        elif kind == "v":
            w.varint(v)
        elif kind == "zz":
            w.zz(v)
        else:
            w.f32(v)
    return bytes(w.buf)


def _gauss_side(lo: int, hi: int) -> bytes:
    return _w(("zz", lo), ("v", hi - lo), ("u8", 2), ("f", 0.0), ("f", 4.0))


WORD = b"\x01\x00\x00\x00"
G31 = bytes([3, 128 - 31, 128 + 31])
G3 = bytes([3, 128 - 3, 128 + 3])


@pytest.mark.parametrize("blob,R,C,bits,field", [
    (G3 + bytes([0x20]) + WORD, 4, 4, 3, "grid.flags"),                             # unknown flag bit
    (G31 + bytes([2]) + WORD, 4, 4, 6, "grid.flags"),                               # 3 codes per symbol of 63
    (G3 + bytes([4]) + _gauss_side(1, 3) + WORD, 4, 4, 3, "grid.rows"),             # groups not from 0
    (G3 + bytes([4]) + _w(("zz", 0), ("v", 0)) + WORD, 4, 4, 3, "grid.rows"),      # flagged but one group
    (G3 + bytes([4]) + _gauss_side(0, 64) + WORD, 80, 4, 3, "grid.rows"),           # 65 groups
    (G3 + bytes([12]) + _gauss_side(0, 40) + _gauss_side(0, 40) + WORD, 64, 64, 3, "grid.contexts"),
    (G3 + bytes([16, 0]) + WORD, 4, 4, 3, "grid.tables"),                           # no tables
    (G3 + bytes([16, 2]) + WORD, 4, 4, 3, "grid.tables"),                           # 2 tables, 1 context
    (G3 + bytes([20]) + _gauss_side(0, 2) + bytes([2, 1, 0]) + WORD, 4, 4, 3, "grid.table_context"),
    (G3 + bytes([20]) + _gauss_side(0, 2) + bytes([1, 5]) + WORD, 4, 4, 3, "grid.table_context"),
    (G3 + bytes([16, 1, 2, 1, 8]) + WORD, 4, 4, 3, "grid.layout"),                  # fold 2
    (G3 + bytes([16, 1, 0, 0, 8]) + WORD, 4, 4, 3, "grid.layout"),                  # bin width 0
    (G3 + bytes([16, 1, 0, 1, 41]) + WORD, 4, 4, 3, "grid.layout"),                 # precision 41
    (G3 + bytes([16, 1, 0, 7, 8, 0]) + WORD, 4, 4, 3, "grid.count"),                # a table with no mass
    (G3 + bytes([0, 255, 0]) + WORD, 4, 4, 3, "grid.sigma"),                        # sigma index 231
    (G3 + bytes([0, 30, 18]) + WORD, 4, 4, 3, "grid.sigma"),                        # shape 18
    (G3 + bytes([4]) + _gauss_side(0, 1) + _gauss_side(-30, 0) + _gauss_side(0, 3) + WORD, 4, 4, 3, "grid.sigma"),
    (G3 + bytes([4]) + _gauss_side(0, 1) + _gauss_side(0, 9) + _gauss_side(0, 18) + WORD, 4, 4, 3, "grid.shape"),
    (G3 + bytes([0, 30]), 4, 4, 3, "grid.shape"),                                    # ends early
])
def test_hostile_grid_headers_are_rejected_by_field(blob, R, C, bits, field):
    p = {"dtype": "int8", "shape": [R, C], "bits": bits}
    with pytest.raises(CodecError, match=field):
        codecs.decode("ans", blob, R * C, p)


def _refs_blob(R=8, C=12, parent=None, beta=None, base=None, resid=None):
    rng = np.random.default_rng(5)
    codes = _quant(rng.standard_normal((R, C)), 6)
    parent = np.array([-1, -1, -1, 0, -1, 2, -1, 5]) if parent is None else parent
    beta = np.full(int((parent >= 0).sum()), 16) if beta is None else beta
    refs = ans_refs.Refs(parent, beta)
    ok = parent >= 0
    base = enc._grid_blob(codes[~ok]) if base is None else base
    resid = enc._grid_blob(genc.residuals(codes, refs, -31, 31)) if resid is None else resid
    return genc.encode_parts(refs, base, resid, int(codes.min()), int(codes.max())), codes


def test_a_valid_crafted_refs_blob_decodes():
    blob, codes = _refs_blob()
    lo, hi = int(codes.min()), int(codes.max())
    assert blob[1] == lo + 128 and blob[2] == hi + 128
    assert np.array_equal(em.decode_codes(blob, 8, 12, (-31, 31)), codes)


def _refs_side(flags: bytes, deltas: bytes, betas: bytes) -> bytes:
    return flags + deltas + betas + WORD


@pytest.mark.parametrize("side,field", [
    (_refs_side(_gauss_side(0, 1), _w(("zz", 1), ("v", 0)), _w(("zz", 16), ("v", 0))), "refs.flags"),
    (_refs_side(_w(("zz", 0), ("v", 1), ("u8", 1), ("v", 8), ("v", 0)), _w(("zz", 1), ("v", 0)),
                _w(("zz", 16), ("v", 0))), "refs.flags"),                           # no referenced row
    (_refs_side(_w(("zz", 0), ("v", 1), ("u8", 1), ("v", 0), ("v", 8)), _w(("zz", 1), ("v", 0)),
                _w(("zz", 16), ("v", 0))), "refs.flags"),                           # every row referenced
    (_refs_side(_w(("zz", 0), ("v", 1), ("u8", 1), ("v", 6), ("v", 2)), _w(("zz", 0), ("v", 0)),
                _w(("zz", 16), ("v", 0))), "refs.deltas"),                          # delta 0
    (_refs_side(_w(("zz", 0), ("v", 1), ("u8", 1), ("v", 6), ("v", 2)), _w(("zz", 8), ("v", 0)),
                _w(("zz", 16), ("v", 0))), "refs.deltas"),                          # delta R
    (_refs_side(_w(("zz", 0), ("v", 1), ("u8", 1), ("v", 6), ("v", 2)), _w(("zz", 1), ("v", 0)),
                _w(("zz", 0), ("v", 0))), "refs.betas"),
    (_refs_side(_w(("zz", 0), ("v", 1), ("u8", 1), ("v", 6), ("v", 2)), _w(("zz", 1), ("v", 0)),
                _w(("zz", 65), ("v", 0))), "refs.betas"),
])
def test_hostile_refs_side_arrays_are_rejected_by_field(side, field):
    blob = bytes([4, 128 - 31, 128 + 31]) + _w(("v", len(side))) + side + _w(("v", 3)) + bytes([0, 128, 127])
    with pytest.raises(CodecError, match=field):
        em.decode_codes(blob, 8, 12, (-31, 31))


def test_reference_chains_are_capped_both_ways():
    R, C = 80, 12
    rng = np.random.default_rng(10)
    row = _quant(rng.standard_normal((1, C)), 6)
    codes = np.repeat(row, R, axis=0)
    codes[:, 0] = np.arange(R) % 5                                   # rows differ a little: no exact copies
    parent = np.arange(R) - 1                                        # a chain 0 <- 1 <- 2 <- ... (-1 first)
    refs = genc.fit_refs(codes, int(codes.min()), int(codes.max()), parent)
    assert refs is not None and len(ans_refs.waves(refs.parent)) <= ans_refs.MAX_WAVES
    deep = ans_refs.Refs(parent, np.full(R - 1, 16))
    lo, hi = int(codes.min()), int(codes.max())
    blob = genc.encode_parts(deep, enc._grid_blob(codes[:1]), enc._grid_blob(genc.residuals(codes, deep, lo, hi)),
                             lo, hi)
    with pytest.raises(CodecError, match="deep"):
        em.decode_codes(blob, R, C, (-31, 31))
    waves = ans_refs.waves(parent)
    assert len(waves) == R - 1 and all(w.tolist() == [i + 1] for i, w in enumerate(waves))


def test_hostile_refs_parts_are_rejected():
    blob, _ = _refs_blob()
    n_side = blob[3]
    with pytest.raises(CodecError, match="refs.side_bytes"):
        em.decode_codes(blob[:3] + _w(("v", 10_000)) + blob[4:], 8, 12, (-31, 31))
    at = 4 + n_side
    with pytest.raises(CodecError, match="refs.base_bytes"):
        em.decode_codes(blob[:at] + _w(("v", 10_000)) + blob[at + 1:], 8, 12, (-31, 31))
    nested, _ = _refs_blob(base=blob)                                 # a grid-refs blob inside one: refused
    with pytest.raises(CodecError, match="not allowed"):
        em.decode_codes(nested, 8, 12, (-31, 31))
    flags = np.zeros(8, np.int64)
    flags[3] = 1                                                     # row 3 refers 7 rows back: before row 0
    plans = [(flags, io.SideArray(0, 1, io.SIDE_CAT, counts=(7, 1))), (np.array([7]), io.plan_side(np.array([7]))),
             (np.array([16]), io.plan_side(np.array([16])))]
    w = io.BlobWriter()
    for _, p in plans:
        io.write_side(w, p)
    coder = genc.Ans()
    io.encode_sentinel(coder)
    coder.encode_reverse(plans[0][1].symbols(flags), plans[0][1].model())
    side = io.finish(w, coder)
    base = enc._grid_blob(np.ones((7, 12), np.int8))
    bad = bytes([4, 128 - 31, 128 + 31]) + _w(("v", len(side))) + side + _w(("v", len(base))) + base + \
        enc._grid_blob(np.ones((1, 12), np.int8))
    with pytest.raises(CodecError, match="before row 0"):
        em.decode_codes(bad, 8, 12, (-31, 31))
    other = _quant(np.random.default_rng(9).standard_normal((3, 12)), 6)       # base rows of another shape
    wrong_shape, _ = _refs_blob(base=enc._grid_blob(other))
    with pytest.raises(CodecError):
        em.decode_codes(wrong_shape, 8, 12, (-31, 31))


def _fast_blobs():
    rng = np.random.default_rng(6)
    spread = _quant(_rows_and_cols(rng, (64, 96)), 6)
    bimodal = np.where(rng.random((48, 64)) < 0.5, -20, 20).astype(np.int8) + rng.integers(-2, 3, (48, 64)).astype(np.int8)
    emb = _embedding(rng, 96, 40, 6)
    return [(c, em.encode_codes(c)) for c in (spread, bimodal, emb)]


@pytest.mark.parametrize("case", range(3))
def test_corrupted_fast_blobs_are_rejected_or_stay_in_bounds(case):
    """Every bit of the header and a sample of the stream: a CodecError, or shape-sized codes within the
    declared width; never another exception or a hang. Most damage is caught by the blob's own checks."""
    codes, stored = _fast_blobs()[case]
    R, C = codes.shape
    head = ans_codec.describe(stored, _params(codes, 6))["header_bytes"]
    positions = list(range(min(head, len(stored)))) + np.linspace(head, len(stored) - 1, 60).astype(int).tolist()
    rejected = tried = 0
    for pos in positions:
        for bit in range(8) if pos < head else (0, 7):
            bad = bytearray(stored)
            bad[pos] ^= 1 << bit
            tried += 1
            try:
                out = em.decode_codes(bytes(bad), R, C, (-31, 31))
            except CodecError:
                rejected += 1
                continue
            assert out.shape == codes.shape and out.dtype == np.int8 and np.abs(out.astype(int)).max() <= 31
    assert rejected >= 0.9 * tried
    for cut in (1, 4, len(stored) // 2, len(stored) - 3):
        with pytest.raises(CodecError):
            em.decode_codes(stored[:-cut], R, C, (-31, 31))
    with pytest.raises(CodecError):
        em.decode_codes(stored + WORD, R, C, (-31, 31))


def test_corrupted_grid_section_is_caught_by_its_checksum():
    from artifact_kit import reseal_sha, small_body, small_sections

    from common.errors import ChecksumError
    from packer.reader import parse_artifact
    from packer.writer import SectionSpec, build_artifact

    rng = np.random.default_rng(7)
    codes = _quant(_rows_and_cols(rng, (16, 24)), 6)
    sections = small_sections()
    sections[1] = SectionSpec("w/codes", codes.tobytes(), "ans", _params(codes, 6))
    data = build_artifact(small_body(), sections)
    art = parse_artifact(data)
    assert art.raw("w/codes") == codes.tobytes() and art.stored("w/codes")[0] == io.MODEL_GRID
    entry = art.section("w/codes")
    for pos in range(entry.offset, entry.offset + entry.stored_bytes, 3):
        bad = bytearray(data)
        bad[pos] ^= 0x04
        with pytest.raises(ChecksumError, match="w/codes"):
            parse_artifact(reseal_sha(bytes(bad)))
