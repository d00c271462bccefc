"""Attack files: one crafted artifact per rejection in FORMAT.md "Reading", every truncation, every bit flip,
claims of huge tensors, hostile JSON, registry-driven names, and no code execution from any file.

Each crafted file is sealed with a correct SHA-256 (and, unless the test is about the CRC, correct CRC-32s),
so it reaches the check it targets; each must raise exactly the documented error class naming the field.
"""

from __future__ import annotations

import ast
import json
import os
import tracemalloc
from pathlib import Path

import brotli
import numpy as np
import pytest
from artifact_kit import (
    read_everything,
    reseal_manifest,
    reseal_sha,
    seal,
    small_artifact,
    small_body,
    small_sections,
    split,
)

from common.errors import (
    ArtifactError,
    ChecksumError,
    CodecError,
    FormatError,
    MagicError,
    ManifestError,
    ScaleError,
    SchemaError,
    SectionTableError,
    SizeError,
    TruncatedError,
    UnknownFormatError,
    VersionError,
)
from packer import codecs
from packer import constants as C
from packer.manifest import encode_manifest
from packer.reader import parse_artifact, read_artifact
from packer.writer import SectionSpec, build_artifact

ROOT = Path(__file__).resolve().parents[2]
BASE = small_artifact()
MB, PAYLOAD = split(BASE)


def m0() -> dict:
    return json.loads(MB)


def edited(edit, crc: bool = True) -> bytes:
    m = m0()
    edit(m)
    return reseal_manifest(m, PAYLOAD, crc)


def text_manifest(text: str) -> bytes:
    return seal(text.encode("latin-1"), PAYLOAD)


def sec(m: dict, name: str) -> dict:
    return next(s for s in m["sections"] if s["name"] == name)


def ten(m: dict, name: str) -> dict:
    return next(t for t in m["tensors"] if t["name"] == name)


def test_base_artifact_is_valid_and_uses_every_builtin_codec():
    art = read_everything(BASE)
    assert {s.codec for s in art.sections} == {"raw", "zstd", "lzma"}
    assert art.array("w/codes").shape == (4, 8)


# --- one crafted file per rejection ------------------------------------------------------------------------
def _set(path: str, value):
    """An edit that sets manifest member `path` (dot-separated; `sec:NAME` / `ten:NAME` pick entries)."""
    def edit(m):
        obj, keys = m, path.split(".")
        for k in keys[:-1]:
            obj = sec(obj, k[4:]) if k.startswith("sec:") else ten(obj, k[4:]) if k.startswith("ten:") else obj[k]
        obj[keys[-1]] = value
    return edit


def _del(path: str):
    def edit(m):
        obj, keys = m, path.split(".")
        for k in keys[:-1]:
            obj = sec(obj, k[4:]) if k.startswith("sec:") else ten(obj, k[4:]) if k.startswith("ten:") else obj[k]
        del obj[keys[-1]]
    return edit


def _do(*edits):
    def edit(m):
        for e in edits:
            e(m)
    return edit


def _many_sections(m):
    m["sections"] += [dict(sec(m, "w/scales"), name=f"x{i}") for i in range(C.MAX_SECTIONS)]


def _huge_total(m):
    m["sections"] += [{"name": f"big{i}", "codec": "zstd", "params": {}, "offset": 0, "stored_bytes": 0,
                       "raw_bytes": C.MAX_SECTION_RAW_BYTES, "crc32": 0} for i in range(5)]


def _many_tensors(m):
    m["tensors"] += [{"name": f"a{i}", "shape": [8, 4], "alias_of": "emb"} for i in range(C.MAX_TENSORS)]


def _gap(m):
    sec(m, "w/codes")["offset"] += 1


def _overlap(m):
    sec(m, "w/codes")["offset"] -= 1


def _past_end(m):
    s = m["sections"][-1]
    s["stored_bytes"] = s["raw_bytes"] = len(PAYLOAD) - s["offset"] + 1
    s["params"] = {}


def _short_table(m):
    m["sections"] = m["sections"][:-1]
    m["tensors"] = [t for t in m["tensors"] if t["name"] != "w"]


CASES = [
    # header and container
    ("file shorter than header + trailer", lambda: BASE[:C.HEADER_BYTES + C.TRAILER_BYTES - 1], TruncatedError,
     "too short"),
    ("bad magic", lambda: seal(MB, PAYLOAD, magic=b"GPAL"), MagicError, "magic b'GPAL'"),
    ("unsupported major version", lambda: seal(MB, PAYLOAD, major=2), VersionError, "version 2.0"),
    ("unsupported minor version", lambda: seal(MB, PAYLOAD, minor=7), VersionError, "version 1.7"),
    ("manifest_len over the cap", lambda: seal(MB, PAYLOAD, manifest_len=C.MAX_MANIFEST_BYTES + 1),
     ManifestError, "1048577 at offset 6 exceeds"),
    ("manifest_len past the end", lambda: seal(MB, PAYLOAD, manifest_len=len(MB) + len(PAYLOAD) + 1),
     TruncatedError, "runs past the end"),
    ("SHA-256 mismatch", lambda: BASE[:-1] + bytes([BASE[-1] ^ 1]), ChecksumError, "SHA-256"),
    # a 1.1 manifest (one brotli stream of the JSON)
    ("1.1 manifest that is plain JSON", lambda: seal(MB, PAYLOAD, minor=1), ManifestError,
     "format 1.1.*cannot be decoded: brotli stream is corrupt"),
    ("1.1 manifest stream cut short", lambda: seal(brotli.compress(MB)[:-2], PAYLOAD, minor=1), ManifestError,
     "ends before it is finished"),
    ("1.1 manifest with bytes after its stream", lambda: seal(brotli.compress(MB) + b"\x00", PAYLOAD, minor=1),
     ManifestError, "bytes after its end"),
    ("1.1 manifest that expands past 1 MiB", lambda: seal(brotli.compress(b" " * (C.MAX_MANIFEST_BYTES + 1)),
                                                          PAYLOAD, minor=1), ManifestError,
     "decodes to more than 1048576 bytes"),
    ("1.1 manifest that decodes to non-canonical JSON", lambda: seal(brotli.compress(MB + b" "), PAYLOAD, minor=1),
     ManifestError, "not canonical"),
    # manifest bytes
    ("non-ASCII manifest", lambda: text_manifest(MB.decode().replace('"test"', '"t\xe9st"')), ManifestError,
     "not ASCII.*0xe9"),
    ("nesting deeper than 16", lambda: text_manifest('{"a":' * 17 + "1" + "}" * 17), ManifestError,
     "deeper than 16"),
    ("integer token too long", lambda: text_manifest(MB.decode().replace('"d_model":8', '"d_model":' + "9" * 40)),
     ManifestError, "number token of 40 characters"),
    ("float token too long", lambda: text_manifest(MB.decode().replace("1.5", "1." + "5" * 40)), ManifestError,
     "number token of 42 characters"),
    ("NaN constant", lambda: text_manifest(MB.decode().replace("1.5", "NaN")), ManifestError, "constant NaN"),
    ("Infinity by overflow", lambda: text_manifest(MB.decode().replace("1.5", "1e999")), ManifestError,
     "not finite"),
    ("invalid JSON", lambda: text_manifest(MB.decode()[:-1]), ManifestError, "not valid JSON"),
    ("duplicate key", lambda: text_manifest(MB.decode().replace('{"model"', '{"model":1,"model"', 1)),
     ManifestError, "key 'model' twice"),
    ("top level not an object", lambda: text_manifest("[]"), ManifestError, "must be a JSON object"),
    ("whitespace (not canonical)", lambda: text_manifest(MB.decode().replace(",", ", ", 1)), ManifestError,
     "not canonical"),
    ("escaped ASCII (not canonical)", lambda: text_manifest(MB.decode().replace('"test"', '"\\u0074est"')),
     ManifestError, "not canonical"),
    ("unsorted keys (not canonical)", lambda: text_manifest(
        '{"tool":' + encode_manifest(m0()["tool"]).decode() + "," +
        encode_manifest({k: v for k, v in m0().items() if k != "tool"}).decode()[1:]), ManifestError,
     "not canonical"),
    # top-level schema
    *[(f"missing {k}", (lambda k=k: edited(_del(k))), SchemaError, f"{k}: is required")
      for k in ("sections", "tensors", "model", "routing", "tokenizer", "tool")],
    ("options not an object", lambda: edited(_set("options", 3)), SchemaError, "options: must be an object"),
    # section table entries
    ("more than 4096 sections", lambda: edited(_many_sections), SchemaError, "at most 4096"),
    ("section not an object", lambda: edited(lambda m: m["sections"].append(7)), SchemaError,
     r"sections\[3\]: must be an object"),
    ("section with an extra member", lambda: edited(_set("sec:w/codes.extra", 1)), SchemaError,
     "must have exactly"),
    ("section name empty", lambda: edited(_set("sec:w/codes.name", "")), SchemaError, "printable string"),
    ("section name non-printable", lambda: edited(_set("sec:w/codes.name", "w\ncodes")), SchemaError,
     "printable string"),
    ("section name too long", lambda: edited(_set("sec:w/codes.name", "n" * 201)), SchemaError, "1..200"),
    ("duplicate section name", lambda: edited(_set("sec:w/codes.name", "emb/data")), SchemaError,
     "duplicate section name 'emb/data'"),
    ("unknown codec", lambda: edited(_set("sec:w/codes.codec", "zpaq")), CodecError, "unknown codec 'zpaq'"),
    ("codec not a string", lambda: edited(_set("sec:w/codes.codec", 5)), SchemaError, "codec: must be a string"),
    ("params not an object", lambda: edited(_set("sec:w/codes.params", [])), SchemaError,
     "params: must be an object"),
    ("negative offset", lambda: edited(_set("sec:w/codes.offset", -1)), SchemaError, "offset: must be an integer"),
    ("boolean stored_bytes", lambda: edited(_set("sec:w/codes.stored_bytes", True)), SchemaError,
     "stored_bytes: must be an integer"),
    ("float raw_bytes", lambda: edited(_set("sec:w/codes.raw_bytes", 32.0)), SchemaError,
     "raw_bytes: must be a non-negative integer"),
    ("crc32 over 32 bits", lambda: edited(_set("sec:w/codes.crc32", 2**32), crc=False), SchemaError,
     "crc32: must be an integer in 0..4294967295"),
    ("raw_bytes over the per-section limit", lambda: edited(_do(_set("sec:w/codes.raw_bytes", 2**32 + 1),
                                                               _set("sec:w/codes.params", {}))),
     SizeError, "4294967297 is over the per-section limit"),
    ("raw codec with stored != raw", lambda: edited(_do(_set("sec:w/scales.raw_bytes", 9),
                                                       _set("sec:w/scales.params", {}))),
     SizeError, "stored_bytes 8 != raw_bytes 9"),
    ("decoded total over the limit", lambda: edited(_huge_total), SizeError, "decoded bytes in all"),
    ("unknown dtype", lambda: edited(_set("sec:w/codes.params.dtype", "float64")), SchemaError,
     "must be one of.*'float64'"),
    ("dtype without shape", lambda: edited(_del("sec:w/codes.params.shape")), SchemaError, "shape must be"),
    ("shape without dtype", lambda: edited(_del("sec:w/codes.params.dtype")), SchemaError, "dtype: must be one"),
    ("shape with 9 dimensions", lambda: edited(_set("sec:w/codes.params.shape", [1] * 9)), SchemaError,
     "at most 8"),
    ("negative dimension", lambda: edited(_set("sec:w/codes.params.shape", [-4, -8])), SchemaError,
     "non-negative"),
    ("section of 10^12 elements", lambda: edited(_set("sec:w/codes.params.shape", [10**6, 10**6])), SizeError,
     "1000000000000 elements, over the limit"),
    ("elements x size != raw_bytes", lambda: edited(_set("sec:w/codes.params.shape", [4, 9])), SizeError,
     "36 elements x 1 bytes of int8 = 36 bytes, but the section declares raw_bytes 32"),
    ("bits out of range", lambda: edited(_set("sec:w/codes.params.bits", 9)), SchemaError, "bits: must be"),
    ("bits a string", lambda: edited(_set("sec:w/codes.params.bits", "6")), SchemaError, "bits: must be"),
    ("level not an integer", lambda: edited(_set("sec:w/codes.params.level", "max")), SchemaError,
     "level: must be an integer"),
    # tensor table
    ("more than 16384 tensors", lambda: edited(_many_tensors), SchemaError, "at most 16384"),
    ("tensor not an object", lambda: edited(lambda m: m["tensors"].append("w")), SchemaError,
     r"tensors\[3\]: must be an object"),
    ("tensor without a name", lambda: edited(_del("ten:w.name")), SchemaError, "name must be a printable"),
    ("tensor listed twice", lambda: edited(_set("ten:w.name", "emb")), SchemaError, "'emb': is listed twice"),
    ("tensor shape not a list", lambda: edited(_set("ten:w.shape", "4x8")), SchemaError, "shape must be a list"),
    ("tensor of 10^12 elements", lambda: edited(_set("ten:w.shape", [10**6, 10**6])), SizeError,
     "tensor 'w'.shape: shape \\[1000000, 1000000\\] has 1000000000000 elements"),
    ("alias with extra members", lambda: edited(_set("ten:head.format", "fp16")), SchemaError,
     "an alias has exactly"),
    ("alias of a missing tensor", lambda: edited(_set("ten:head.alias_of", "nope")), SchemaError,
     "must name a stored.*'nope'"),
    ("alias of an alias", lambda: edited(lambda m: m["tensors"].append(
        {"name": "h2", "shape": [8, 4], "alias_of": "head"})), SchemaError, "must name a stored.*'head'"),
    ("alias_of not a string", lambda: edited(_set("ten:head.alias_of", ["emb"])), SchemaError, "alias_of must"),
    ("alias shape differs", lambda: edited(_set("ten:head.shape", [4, 8])), SizeError,
     "differs from its alias target"),
    ("unknown tensor format", lambda: edited(_set("ten:w.format", "int99_row")), UnknownFormatError,
     "unknown tensor format 'int99_row'"),
    ("tensor format not a string", lambda: edited(_set("ten:w.format", ["int6_row"])), UnknownFormatError,
     "unknown tensor format"),
    ("tensor sections empty", lambda: edited(_set("ten:w.sections", {})), SchemaError, "must be a non-empty"),
    ("tensor names a missing section", lambda: edited(_set("ten:w.sections.codes", "w/nope")), SchemaError,
     "names section 'w/nope', which is not in the section table"),
    ("tensor section name unhashable", lambda: edited(_set("ten:w.sections.codes", ["w/codes"])), SchemaError,
     "not in the section table"),
    # model, routing, tokenizer, tool
    ("model.family missing", lambda: edited(_del("model.family")), SchemaError, "model.family"),
    ("model.config not an object", lambda: edited(_set("model.config", "x")), SchemaError, "model.config"),
    ("routing.policy missing", lambda: edited(_del("routing.policy")), SchemaError, "routing.policy"),
    ("routing.passes zero", lambda: edited(_set("routing.passes", 0)), SchemaError, "routing.passes.*got 0"),
    ("routing.passes boolean", lambda: edited(_set("routing.passes", True)), SchemaError, "routing.passes"),
    ("routing.threshold a string", lambda: edited(_set("routing.threshold", "high")), SchemaError,
     "routing.threshold"),
    ("routing fraction over 1", lambda: edited(_set("routing.cap_fraction", 1.5)), SchemaError,
     r"routing.cap_fraction: must be a number in \[0, 1\], got 1.5"),
    ("tokenizer.sha256 not hex", lambda: edited(_set("tokenizer.sha256", "XYZ")), SchemaError,
     "tokenizer.sha256.*'XYZ'"),
    ("tokenizer.vocab_size zero", lambda: edited(_set("tokenizer.vocab_size", 0)), SchemaError,
     "tokenizer.vocab_size"),
    ("tool.version missing", lambda: edited(_del("tool.version")), SchemaError, "tool.version"),
    # tiling
    ("gap between sections", lambda: edited(_gap), SectionTableError, "'w/codes' starts at payload offset"),
    ("overlapping sections", lambda: edited(_overlap), SectionTableError, "no gap or overlap"),
    ("section past the payload", lambda: edited(_past_end), SectionTableError, "runs past the payload"),
    ("unaccounted payload bytes", lambda: edited(_short_table), SectionTableError, "unaccounted"),
    ("payload but no sections", lambda: edited(lambda m: (m.update(sections=[], tensors=[]))),
     SectionTableError, "sections cover 0 payload bytes"),
    # per-section checksum
    ("section CRC-32 mismatch", lambda: edited(_set("sec:w/codes.crc32", 12345), crc=False), ChecksumError,
     "CRC32 of section 'w/codes'.*0x00003039"),
]


@pytest.mark.parametrize("name,build,error,match", CASES, ids=[c[0] for c in CASES])
def test_crafted_file_is_rejected_with_its_error(name, build, error, match):
    data = build()
    with pytest.raises(error, match=match) as info:
        parse_artifact(data)
    assert isinstance(info.value, ArtifactError)


def test_rejection_classes_are_distinct_and_all_listed_in_format_md():
    text = (ROOT / "FORMAT.md").read_text()
    reading = text[text.index("## Reading"):]
    for cls in {c[2] for c in CASES}:
        assert f"`{cls.__name__}`" in reading, f"{cls.__name__} is not listed in FORMAT.md's Reading section"


def test_sha_mismatch_names_the_damaged_section():
    data = bytearray(BASE)
    data[len(BASE) - C.TRAILER_BYTES - 2] ^= 0x10          # inside the last section (w/scales)
    with pytest.raises(ChecksumError, match="section 'w/scales' fails its CRC32"):
        parse_artifact(bytes(data))


def test_appended_bytes_are_rejected():
    with pytest.raises(ChecksumError):
        parse_artifact(BASE + b"\x00")
    with pytest.raises(SectionTableError, match="unaccounted"):
        parse_artifact(seal(MB, PAYLOAD + b"\x00"))


# --- decode-time attacks: the gate passed, the codec must still fail typed ---------------------------------
def _with_section_bytes(name: str, stored: bytes) -> bytes:
    """BASE with one section's stored bytes replaced (offsets, CRCs and SHA recomputed)."""
    m, payload, offset = m0(), b"", 0
    for s in m["sections"]:
        part = stored if s["name"] == name else PAYLOAD[s["offset"]:s["offset"] + s["stored_bytes"]]
        s["offset"], s["stored_bytes"] = offset, len(part)
        payload += part
        offset += len(part)
    return reseal_manifest(m, payload)


@pytest.mark.parametrize("name", ["w/codes", "emb/data"])
def test_corrupt_compressed_stream_is_a_codec_error(name):
    s = sec(m0(), name)
    stored = bytearray(PAYLOAD[s["offset"]:s["offset"] + s["stored_bytes"]])
    for junk in (bytes(stored) + b"junk", bytes(stored[:-2]), b"\x00" * len(stored)):
        art = parse_artifact(_with_section_bytes(name, junk))       # checksums are right: the gate passes
        with pytest.raises(CodecError, match="zstd|lzma"):
            art.raw(name)


def peak_bytes_raising(call, error: type, match: str) -> int:
    """Peak traced allocation while `call()` raises `error` with a message matching `match`."""
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decoded_size_claims_do_not_allocate():
    """A tiny zstd stream that claims 2 GiB: decoding fails typed and memory follows the real output."""
    def lie(m):
        s = sec(m, "w/codes")
        s["params"], s["raw_bytes"] = {}, C.MAX_TENSOR_ELEMENTS
    art = parse_artifact(edited(lie))
    peak = peak_bytes_raising(lambda: art.raw("w/codes"), CodecError, "declares 2147483648")
    assert peak < 8 << 20, f"decoding a 2 GiB claim allocated {peak} bytes"


def test_tensor_of_10_12_elements_rejected_before_allocating():
    def huge(m):
        ten(m, "w")["shape"] = [10**6, 10**6]
        s = sec(m, "w/codes")
        s["params"]["shape"], s["raw_bytes"] = [10**6, 10**6], 10**12
    data = edited(huge)
    peak = peak_bytes_raising(lambda: parse_artifact(data), SizeError, "over the")
    assert peak < 1 << 20, f"rejecting a 10^12-element claim allocated {peak} bytes"


# --- hostile JSON ------------------------------------------------------------------------------------------
def test_deep_nesting_of_a_full_megabyte_is_refused_before_parsing(monkeypatch):
    """Refused by the bracket count, never handed to the JSON parser (bench/bench_reader.py times it)."""
    import packer.manifest as M

    monkeypatch.setattr(M.json, "loads", lambda *a, **k: pytest.fail("the parser saw a hostile nesting"))
    for text in ("[" * C.MAX_MANIFEST_BYTES, '{"a":' * (C.MAX_MANIFEST_BYTES // 5)):
        with pytest.raises(ManifestError, match="deeper than 16"):
            parse_artifact(text_manifest(text))


def test_brackets_inside_strings_do_not_count_as_nesting():
    data = edited(_set("options.note", "[" * 100 + "{" * 100))
    assert parse_artifact(data).manifest["options"]["note"].startswith("[[[")


def test_enormous_but_legal_manifest_is_read_and_over_cap_is_refused_unparsed():
    big = edited(_set("options.blob", list(range(150_000))))
    assert len(split(big)[0]) < C.MAX_MANIFEST_BYTES
    assert len(parse_artifact(big).manifest["options"]["blob"]) == 150_000     # bench/bench_reader.py times it
    over = edited(_set("options.blob", "x" * C.MAX_MANIFEST_BYTES))
    with pytest.raises(ManifestError, match="exceeds the 1048576-byte cap"):
        parse_artifact(over)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scales_are_rejected_naming_the_tensor(bad):
    """The reader accepts the file (its bytes are intact); rebuilding tensor 'w' refuses the scale."""
    from quant.unpack import artifact_tensors

    sections = small_sections()
    scales = np.frombuffer(sections[2].raw, np.float16).copy()
    scales[2] = bad
    sections[2] = SectionSpec("w/scales", scales.tobytes(), "raw", sections[2].params)
    art = parse_artifact(build_artifact(small_body(), sections))
    with pytest.raises(ScaleError, match=r"tensor 'w' \(int6_row\).*scale \[2\] is (nan|inf|-inf)") as info:
        artifact_tensors(art)
    assert isinstance(info.value, ArtifactError) and "ScaleError" in (ROOT / "FORMAT.md").read_text()


def test_unknown_extra_members_are_carried():
    data = edited(_do(_set("routing.probe", {"weights": [0.5, -1.0], "kind": "linear"}),
                      _set("provenance", {"git": "abc"}), _set("ten:w.group_size", 64)))
    m = parse_artifact(data).manifest
    assert m["routing"]["probe"]["kind"] == "linear" and m["provenance"] == {"git": "abc"}


# --- every truncation and every bit flip -------------------------------------------------------------------
def test_every_truncation_is_rejected():
    for cut in range(len(BASE)):
        with pytest.raises(ArtifactError):
            parse_artifact(BASE[:cut])


def test_every_single_bit_flip_of_every_byte_is_rejected():
    """8 flips per byte over the whole file, trailer included; the header bytes get all 255 other values."""
    n = 0
    for i in range(len(BASE)):
        values = range(256) if i < C.HEADER_BYTES else [BASE[i] ^ (1 << b) for b in range(8)]
        for v in values:
            if v == BASE[i]:
                continue
            with pytest.raises(ArtifactError):
                parse_artifact(BASE[:i] + bytes([v]) + BASE[i + 1:])
            n += 1
    assert n == (len(BASE) - C.HEADER_BYTES) * 8 + C.HEADER_BYTES * 255


def resealed_flips(data: bytes):
    """(byte index, mask, the artifact read in full or None if rejected) for flips 0x01 and 0x20 of every byte
    before the trailer, each file re-sealed with a correct SHA-256."""
    for i in range(len(data) - C.TRAILER_BYTES):
        for mask in (0x01, 0x20):
            flipped = reseal_sha(data[:i] + bytes([data[i] ^ mask]) + data[i + 1:])
            try:
                yield i, mask, flipped, read_everything(flipped)
            except ArtifactError:
                yield i, mask, flipped, None


def test_no_byte_is_free_even_when_the_sha_is_resealed():
    """With the trailer recomputed after each flip, a flip is rejected, or changes what the file says.

    Payload bytes are caught by their section's CRC-32; manifest bytes cannot change without changing the
    parsed manifest, because only the canonical spelling is accepted. So no byte can change silently.
    """
    base_manifest = m0()
    payload_start = C.HEADER_BYTES + len(MB)
    counts = {"rejected": 0, "visible": 0}
    for i, mask, _, art in resealed_flips(BASE):
        if art is None:
            counts["rejected"] += 1
            continue
        assert i < payload_start, f"payload byte {i} flipped by {mask:#x} was accepted"
        assert art.manifest != base_manifest, f"manifest byte {i} flipped by {mask:#x} changed nothing"
        counts["visible"] += 1
    assert counts["rejected"] > counts["visible"] > 0


def test_format_1_1_files_read_like_1_0_and_store_the_manifest_smaller():
    v11 = small_artifact(minor=1)
    a, b = read_everything(BASE), read_everything(v11)
    assert (a.version, b.version) == ((1, 0), (1, 1)) and a.manifest == b.manifest
    assert [a.raw(s.name) for s in a.sections] == [b.raw(s.name) for s in b.sections]
    assert b.layout.manifest_json_bytes == a.layout.manifest_bytes == len(MB)
    assert b.layout.manifest_bytes < a.layout.manifest_bytes
    body = {k: v for k, v in m0().items() if k != "sections"}
    assert build_artifact(body, small_sections()) == v11          # the writer's default is 1.1


def test_a_1_1_manifest_bomb_is_stopped_at_the_cap_without_the_memory():
    """64 MiB of JSON whitespace compress to a few hundred bytes; decoding stops at the 1 MiB cap."""
    bomb = seal(brotli.compress(b" " * (64 << 20), quality=5), PAYLOAD, minor=1)
    assert len(bomb) < 4096
    peak = peak_bytes_raising(lambda: parse_artifact(bomb), ManifestError, "decodes to more than 1048576 bytes")
    assert peak < 8 * C.MAX_MANIFEST_BYTES, f"decoding the bomb peaked at {peak} bytes"


def test_1_1_flips_are_rejected_or_stay_inside_the_brotli_encoding():
    """A 1.1 file with a bit flipped and the SHA-256 resealed: a payload flip is always rejected (CRC-32); a
    manifest flip is rejected, changes the parsed manifest, or only re-spells the brotli stream (window bits,
    block layout) and decodes to byte-identical canonical JSON. Nothing else is possible, so the meaning of
    the file cannot change silently; FORMAT.md says this is 1.1's one free-byte exception."""
    v11 = small_artifact(minor=1)
    mlen = len(v11) - C.HEADER_BYTES - C.TRAILER_BYTES - len(PAYLOAD)
    counts = {"rejected": 0, "visible": 0, "same JSON": 0}
    for i, mask, flipped, art in resealed_flips(v11):
        if art is None:
            counts["rejected"] += 1
            continue
        assert i < C.HEADER_BYTES + mlen, f"payload byte {i} flipped by {mask:#x} was accepted"
        key = "visible" if art.manifest != m0() else "same JSON"
        assert key == "visible" or split(flipped)[0] == MB
        counts[key] += 1
    assert counts["rejected"] > 0 and counts["rejected"] > counts["visible"] + counts["same JSON"]


# --- names go through the registries -----------------------------------------------------------------------
def test_new_codec_and_tensor_format_are_accepted_through_the_registries(monkeypatch):
    monkeypatch.setitem(codecs._REGISTRY, "test_rev",
                        codecs.Codec("test_rev", lambda raw, p: bytes(raw)[::-1], lambda st, n, p: bytes(st)[::-1]))
    monkeypatch.setattr(C, "TENSOR_FORMATS", C.TENSOR_FORMATS | {"test_ternary"})
    body = {k: v for k, v in json.loads(MB).items() if k != "sections"}
    body["tensors"] = [{"name": "t", "shape": [2, 3], "format": "test_ternary", "sections": {"codes": "t/codes"}}]
    data = build_artifact(body, [SectionSpec("t/codes", bytes(range(6)), "test_rev",
                                             {"dtype": "int8", "shape": [2, 3]})])
    assert read_everything(data).array("t/codes").tolist() == [[0, 1, 2], [3, 4, 5]]
    monkeypatch.delitem(codecs._REGISTRY, "test_rev")
    with pytest.raises(CodecError, match="unknown codec 'test_rev'"):
        parse_artifact(data)


def test_writer_cannot_write_what_the_reader_rejects(tmp_path):
    from packer.writer import write_artifact
    body = {k: v for k, v in m0().items() if k != "sections"}
    body["routing"] = {"policy": "uniform", "passes": 0}
    with pytest.raises(SchemaError, match="routing.passes"):
        build_artifact(body, small_sections())
    with pytest.raises(ArtifactError):
        write_artifact(tmp_path / "x.gpk", edited(_gap))
    assert not (tmp_path / "x.gpk").exists()


# --- files that are not artifacts --------------------------------------------------------------------------
def test_paths_that_are_not_artifact_files(tmp_path):
    fifo = tmp_path / "pipe.gpk"
    os.mkfifo(fifo)
    for p, match in ((tmp_path / "missing.gpk", "no such file"), (tmp_path, "not a regular file"),
                     (fifo, "not a regular file"), (Path("/dev/zero"), "not a regular file")):
        with pytest.raises(FormatError, match=match):
            read_artifact(p)


# --- no code execution from files --------------------------------------------------------------------------
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _runtime_files() -> list[Path]:
    from packer.code_bytes import RUNTIME_MODULES
    files = {ROOT / rel for rel in RUNTIME_MODULES}
    for pkg in ("packer", "quant", "verify"):
        files.update((ROOT / pkg).glob("*.py"))
    return sorted(files)


def test_artifact_path_imports_no_pickle():
    """The modules that read, decode and run an artifact import no pickle-like module at all."""
    files = _runtime_files()
    assert len(files) >= 15
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad = [n for n in names if n.split(".")[0] in PICKLE_MODULES]
            assert not bad, f"{path.relative_to(ROOT)}:{node.lineno} imports {bad}"


def test_no_unsafe_load_anywhere_in_the_package():
    """Nowhere in golfpack: pickle.load(s)/Unpickler, numpy allow_pickle=True, or torch.load without
    weights_only=True (core/ingest.py imports pickle only to name UnpicklingError)."""
    for pkg in ("core", "quant", "packer", "verify"):
        for path in sorted((ROOT / pkg).glob("*.py")) + [ROOT / "cli.py"]:
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
                kw = {k.arg: k.value for k in node.keywords}
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                assert not (owner in PICKLE_MODULES and fname in ("load", "loads", "Unpickler")), where
                if owner == "torch" and fname == "load":
                    wo = kw.get("weights_only")
                    assert isinstance(wo, ast.Constant) and wo.value is True, f"{where}: torch.load without " \
                                                                              f"weights_only=True"
                if "allow_pickle" in kw:
                    assert isinstance(kw["allow_pickle"], ast.Constant) and not kw["allow_pickle"].value, where


def test_planted_pickle_is_refused_and_never_runs(tmp_path):
    """A .pt whose unpickling would create a file: ingest and pack refuse it, and the file never appears."""
    import pickletools
    import zipfile

    import torch
    from click.testing import CliRunner

    from cli import main
    from common.errors import CheckpointError
    from core.checkpoint import load_checkpoint
    from core.ingest import load_state_dict_file

    marker = tmp_path / "PWNED"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))     # unpickling this would create the marker file

    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": Exploit()}, evil)
    assert not marker.exists()
    with zipfile.ZipFile(evil) as zf:     # the payload is live: its pickle calls builtins.open (static look)
        pkl = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    assert any("GLOBAL" in op.name and str(arg).endswith(" open") for op, arg, _ in pickletools.genops(pkl))
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        load_state_dict_file(evil)
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    res = CliRunner().invoke(main, ["pack", str(evil), "-o", str(tmp_path / "out.gpk")])
    assert res.exit_code == CheckpointError.exit_code, res.output
    assert not marker.exists() and not (tmp_path / "out.gpk").exists()
