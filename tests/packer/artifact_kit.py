"""Helpers for the attack and fuzz tests: one small valid artifact, and ways to re-seal altered ones.

`seal` writes header + stored manifest bytes + payload + SHA-256 exactly as FORMAT.md lays them out, so a
test can alter any part and still reach the checks behind the whole-file checksum; `reseal_manifest`
re-encodes a manifest canonically (and optionally recomputes section CRCs) so schema checks are reached too.
The kit's small artifact is format 1.0 (plain JSON manifest, so JSON-level attacks can be spelled as text);
`split` and `reseal_manifest` also handle 1.1 files (brotli manifest) by their version byte.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np

from packer import constants as C
from packer.manifest import encode_manifest, load_manifest, store_manifest
from packer.reader import Artifact, parse_artifact
from packer.writer import SectionSpec, build_artifact


def small_body() -> dict:
    return {"model": {"family": "recurrent", "config": {"d_model": 8}},
            "routing": {"policy": "entropy", "passes": 3, "threshold": 1.5, "cap_fraction": 0.25},
            "tokenizer": {"sha256": "ab" * 32, "vocab_size": 8},
            "tool": {"name": "golfpack", "version": "test"},
            "options": {"matrix_format": "int6_row"},
            "tensors": [{"name": "emb", "shape": [8, 4], "format": "fp16", "sections": {"data": "emb/data"}},
                        {"name": "head", "shape": [8, 4], "alias_of": "emb"},
                        {"name": "w", "shape": [4, 8], "format": "int6_row",
                         "sections": {"codes": "w/codes", "scales": "w/scales"}}]}


def small_sections() -> list[SectionSpec]:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((8, 4)).astype(np.float16)
    codes = rng.integers(-31, 32, size=(4, 8)).astype(np.int8)
    codes[:, :4] = 0                                  # compressible, so zstd really compresses
    scales = (rng.random(4) + 0.5).astype(np.float16)
    return [SectionSpec("emb/data", emb.tobytes(), "lzma", {"dtype": "float16", "shape": [8, 4]}),
            SectionSpec("w/codes", codes.tobytes(), "zstd", {"dtype": "int8", "shape": [4, 8], "bits": 6,
                                                             "level": 22}),
            SectionSpec("w/scales", scales.tobytes(), "raw", {"dtype": "float16", "shape": [4]})]


def small_artifact(minor: int = 0) -> bytes:
    return build_artifact(small_body(), small_sections(), minor=minor)


def split(data: bytes) -> tuple[bytes, bytes]:
    """(manifest JSON bytes, payload bytes) of a well-formed artifact (a 1.1 manifest is decoded)."""
    mlen = struct.unpack_from("<I", data, 6)[0]
    stored = data[C.HEADER_BYTES:C.HEADER_BYTES + mlen]
    return load_manifest(stored, data[5]), data[C.HEADER_BYTES + mlen:-C.TRAILER_BYTES]


def seal(manifest: bytes, payload: bytes, major: int = 1, minor: int = 0, magic: bytes = C.MAGIC,
         manifest_len: int | None = None) -> bytes:
    """Header + manifest + payload + a correct SHA-256 trailer (manifest_len may lie on purpose)."""
    mlen = len(manifest) if manifest_len is None else manifest_len
    body = magic + struct.pack("<BBI", major, minor, mlen) + manifest + payload
    return body + hashlib.sha256(body).digest()


def reseal_sha(data: bytes) -> bytes:
    """The same bytes with the trailer recomputed (so only the checks behind the SHA-256 can reject)."""
    body = bytes(data[:-C.TRAILER_BYTES])
    return body + hashlib.sha256(body).digest()


def fix_crcs(manifest: dict, payload: bytes) -> None:
    """Recompute each section's crc32 from the payload where its range is a well-formed slice of it."""
    for s in manifest.get("sections", []) if isinstance(manifest.get("sections"), list) else []:
        if isinstance(s, dict) and all(isinstance(s.get(k), int) and not isinstance(s.get(k), bool)
                                       and s[k] >= 0 for k in ("offset", "stored_bytes")):
            s["crc32"] = zlib.crc32(payload[s["offset"]:s["offset"] + s["stored_bytes"]])


def reseal_manifest(manifest: dict, payload: bytes, crc: bool = True, minor: int = 0) -> bytes:
    """A format 1.<minor> file with this manifest (canonical JSON, stored as that version stores it), this
    payload, optionally fixed CRCs, and a correct SHA."""
    if crc:
        fix_crcs(manifest, payload)
    return seal(store_manifest(encode_manifest(manifest), minor), payload, minor=minor)


def read_everything(data: bytes) -> Artifact:
    """Parse, then decode every section and type every array: everything a consumer of the reader does."""
    art = parse_artifact(data)
    for s in art.sections:
        art.raw(s.name)
        if "dtype" in s.params:
            art.array(s.name)
    return art
