"""The reader (packer/reader.py): a written artifact read back from a path or bytes, its layout, its two hashes, and
the typed errors of the first checks (the full rejection table is tests/packer/test_attacks.py)."""

import struct

import numpy as np
import pytest

from common.errors import ChecksumError, FormatError, GolfpackError
from packer import constants as C
from packer.reader import read_artifact
from packer.writer import SectionSpec, build_artifact, write_artifact


def body():
    return {"model": {"family": "recurrent", "config": {}}, "routing": {"policy": "uniform", "passes": 3},
            "tokenizer": {"sha256": "0" * 64, "vocab_size": 8}, "tool": {"name": "golfpack", "version": "t"},
            "tensors": [{"name": "w", "shape": [4, 8], "format": "int6_row",
                         "sections": {"codes": "w/codes", "scales": "w/scales"}},
                        {"name": "w2", "shape": [4, 8], "alias_of": "w"}]}


def sections():
    rng = np.random.default_rng(0)
    codes = rng.integers(-31, 32, size=(4, 8)).astype(np.int8)
    scales = rng.random(4).astype(np.float16)
    return [SectionSpec("w/codes", codes.tobytes(), "zstd", {"dtype": "int8", "shape": [4, 8], "bits": 6}),
            SectionSpec("w/scales", scales.tobytes(), "raw", {"dtype": "float16", "shape": [4]})], codes, scales


def test_round_trip_and_layout_adds_up(tmp_path):
    secs, codes, scales = sections()
    data = build_artifact(body(), secs)
    path = tmp_path / "a.gpk"
    write_artifact(path, data)
    art = read_artifact(path)
    assert np.array_equal(art.array("w/codes"), codes)
    assert np.array_equal(art.array("w/scales"), scales)
    lay = art.layout
    assert lay.header_bytes + lay.manifest_bytes + lay.payload_bytes + lay.trailer_bytes == path.stat().st_size
    assert sum(s.stored_bytes for s in art.sections) == lay.payload_bytes


def test_flipped_byte_gives_checksum_error():
    data = bytearray(build_artifact(body(), sections()[0]))
    data[len(data) - 40] ^= 0x01          # inside the payload
    with pytest.raises(ChecksumError, match="SHA-256"):
        read_artifact(bytes(data))


def test_truncated_file_gives_typed_error():
    data = build_artifact(body(), sections()[0])
    for cut in (0, 5, 20, len(data) - 1):
        with pytest.raises(GolfpackError):
            read_artifact(data[:cut])


def test_bad_magic_and_version():
    data = bytearray(build_artifact(body(), sections()[0]))
    with pytest.raises(FormatError, match="magic"):
        read_artifact(b"XXXX" + bytes(data[4:]))
    data[4] = 9
    with pytest.raises(FormatError, match="version 9.1"):
        read_artifact(bytes(data))


def _reseal(manifest_bytes: bytes, payload: bytes) -> bytes:
    import hashlib
    head = C.MAGIC + struct.pack("<BBI", 1, 0, len(manifest_bytes))
    core = head + manifest_bytes + payload
    return core + hashlib.sha256(core).digest()


def test_resealed_bad_manifest_is_rejected_by_schema():
    import json
    data = build_artifact(body(), sections()[0], minor=0)       # 1.0: the manifest is the JSON itself
    mlen = struct.unpack_from("<I", data, 6)[0]
    m = json.loads(data[10:10 + mlen])
    payload = data[10 + mlen:-32]
    m["sections"][0]["offset"] = 1     # a gap: sections no longer tile the payload
    bad = _reseal(json.dumps(m, sort_keys=True, separators=(",", ":")).encode(), payload)
    with pytest.raises(FormatError, match="tile"):
        read_artifact(bad)
    m = json.loads(data[10:10 + mlen])
    m["tensors"][0]["format"] = "int99_row"
    bad = _reseal(json.dumps(m, sort_keys=True, separators=(",", ":")).encode(), payload)
    with pytest.raises(FormatError, match="unknown tensor format"):
        read_artifact(bad)


def test_file_and_trailer_hashes_are_labelled_for_what_they_are(tmp_path):
    import hashlib

    data = build_artifact(body(), sections()[0])
    art = read_artifact(data)
    assert art.file_sha256 == hashlib.sha256(data).hexdigest()                  # what sha256sum prints
    assert art.trailer_sha256 == hashlib.sha256(data[:-32]).hexdigest() == data[-32:].hex()
    assert art.file_sha256 != art.trailer_sha256


def test_path_and_bytes_read_alike_and_sections_are_looked_up_by_name(tmp_path):
    data = build_artifact(body(), sections()[0])
    (tmp_path / "a.gpk").write_bytes(data)
    a, b = read_artifact(tmp_path / "a.gpk"), read_artifact(data)
    assert a.manifest == b.manifest and a.source.endswith("a.gpk") and b.source == "<bytes>"
    assert a.raw("w/codes") == b.raw("w/codes")
    with pytest.raises(FormatError, match="no section named 'nope'"):
        a.section("nope")
    with pytest.raises(FormatError, match="no such file"):
        read_artifact(tmp_path / "missing.gpk")
