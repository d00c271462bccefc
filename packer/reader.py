"""Read an artifact. The single gate: every structural check happens here, before any section is decoded.

Order: size floor, magic, version, manifest length bound, whole-file SHA-256 (on mismatch, per-section CRC32
names the damaged section), manifest JSON + schema, section table tiling the payload exactly, codec names.
Decoding a section is bounded by its declared raw length, and the element count x element size of typed
sections is checked against it. Must not import torch.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from packer import codecs
from packer import constants as C
from packer.errors import ChecksumError, FormatError
from packer.manifest import decode_manifest


@dataclass(frozen=True)
class SectionEntry:
    name: str
    codec: str
    params: dict
    offset: int          # absolute offset in the file
    stored_bytes: int
    raw_bytes: int
    crc32: int


@dataclass(frozen=True)
class Layout:
    """Byte ranges of the file's parts; they add up to file_bytes."""

    header_bytes: int
    manifest_bytes: int
    payload_bytes: int
    trailer_bytes: int
    file_bytes: int


class Artifact:
    """A validated artifact in memory. `raw(name)` decodes one section; `array(name)` types it."""

    def __init__(self, data: bytes, manifest: dict, sections: list[SectionEntry], layout: Layout,
                 version: tuple[int, int], source: str) -> None:
        self._data = data
        self.manifest = manifest
        self.sections = sections
        self.by_name = {s.name: s for s in sections}
        self.layout = layout
        self.version = version
        self.source = source

    @property
    def sha256(self) -> str:
        return self._data[-C.TRAILER_BYTES:].hex()

    def section(self, name: str) -> SectionEntry:
        try:
            return self.by_name[name]
        except KeyError:
            raise FormatError(f"{self.source}: no section named {name!r}") from None

    def stored(self, name: str) -> bytes:
        s = self.section(name)
        return self._data[s.offset:s.offset + s.stored_bytes]

    def raw(self, name: str) -> bytes:
        s = self.section(name)
        return codecs.decode(s.codec, self.stored(name), s.raw_bytes, s.params)

    def array(self, name: str) -> np.ndarray:
        s = self.section(name)
        dtype, shape = s.params.get("dtype"), s.params.get("shape")
        if dtype is None:
            raise FormatError(f"{self.source}: section {name!r} declares no dtype/shape; it is not an array")
        raw = self.raw(name)
        if dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            return bits.view(np.float32).reshape(shape)
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def read_artifact(source: Path | bytes) -> Artifact:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where = bytes(source), "<bytes>"
    else:
        where = str(source)
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise FormatError(f"{where}: no such file") from None
        except IsADirectoryError:
            raise FormatError(f"{where}: is a folder, not an artifact file") from None
    return parse_artifact(data, where)


def parse_artifact(data: bytes, where: str = "<bytes>") -> Artifact:
    n = len(data)
    if n < C.HEADER_BYTES + C.TRAILER_BYTES:
        raise FormatError(f"{where}: {n} bytes is too short for a golfpack artifact "
                          f"(at least {C.HEADER_BYTES + C.TRAILER_BYTES})")
    if data[:4] != C.MAGIC:
        raise FormatError(f"{where}: not a golfpack artifact (magic {data[:4]!r} at offset 0, "
                          f"expected {C.MAGIC!r})")
    major, minor, mlen = struct.unpack_from("<BBI", data, 4)
    if (major, minor) not in C.SUPPORTED_VERSIONS:
        raise FormatError(f"{where}: format version {major}.{minor} at offset 4 is not supported; this golfpack "
                          f"reads {sorted(C.SUPPORTED_VERSIONS)}")
    if mlen > C.MAX_MANIFEST_BYTES:
        raise FormatError(f"{where}: manifest length {mlen} at offset 6 exceeds the {C.MAX_MANIFEST_BYTES}-byte cap")
    payload_start = C.HEADER_BYTES + mlen
    payload_end = n - C.TRAILER_BYTES
    if payload_start > payload_end:
        raise FormatError(f"{where}: manifest length {mlen} at offset 6 runs past the end of the "
                          f"{n}-byte file (truncated?)")
    body = data[:payload_end]
    if hashlib.sha256(body).digest() != data[payload_end:]:
        raise ChecksumError(f"{where}: SHA-256 of the file does not match its trailer at offset {payload_end}: "
                            f"the file is corrupted or truncated{_damaged_hint(data, payload_start, mlen)}")
    manifest = decode_manifest(data[C.HEADER_BYTES:payload_start])
    sections = _section_table(manifest["sections"], payload_start, payload_end, where)
    for s in sections:
        if zlib.crc32(data[s.offset:s.offset + s.stored_bytes]) != s.crc32:
            raise ChecksumError(f"{where}: CRC32 of section {s.name!r} (offset {s.offset}) does not match")
        codecs.get(s.codec)  # unknown codec names are rejected here, by name
    layout = Layout(C.HEADER_BYTES, mlen, payload_end - payload_start, C.TRAILER_BYTES, n)
    return Artifact(data, manifest, sections, layout, (major, minor), where)


def _section_table(table: list[dict], payload_start: int, payload_end: int, where: str) -> list[SectionEntry]:
    out, expected = [], 0
    for s in table:
        if s["offset"] != expected:
            raise FormatError(f"{where}: section {s['name']!r} starts at payload offset {s['offset']}, expected "
                              f"{expected}: sections must tile the payload with no gap or overlap")
        expected = s["offset"] + s["stored_bytes"]
        if expected > payload_end - payload_start:
            raise FormatError(f"{where}: section {s['name']!r} ends at payload offset {expected}, past the "
                              f"payload's {payload_end - payload_start} bytes")
        out.append(SectionEntry(s["name"], s["codec"], s["params"], payload_start + s["offset"],
                                s["stored_bytes"], s["raw_bytes"], s["crc32"]))
    if expected != payload_end - payload_start:
        raise FormatError(f"{where}: sections cover {expected} payload bytes but the payload has "
                          f"{payload_end - payload_start}: unaccounted bytes")
    return out


def _damaged_hint(data: bytes, payload_start: int, mlen: int) -> str:
    """Best effort: name the first section whose CRC32 fails, if the manifest itself still parses."""
    try:
        manifest = decode_manifest(data[C.HEADER_BYTES:payload_start])
        for s in manifest["sections"]:
            a = payload_start + s["offset"]
            if zlib.crc32(data[a:a + s["stored_bytes"]]) != s["crc32"]:
                return f" (section {s['name']!r} fails its CRC32)"
        return ""
    except Exception:  # noqa: BLE001 - only a hint; the checksum error stands either way
        return ""
