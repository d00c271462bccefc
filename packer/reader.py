"""Read an artifact. The single gate: every structural check happens here, before any section is decoded.

Every file is hostile. Order (FORMAT.md "Reading" lists each rejection and its error class): size floor,
magic, version, manifest length bound, whole-file SHA-256 (on mismatch, per-section CRC32 names the damaged
section), the stored manifest decoded to its JSON (1.1: bounded brotli), manifest JSON + canonical form +
schema (packer.manifest: types, ranges, names, codec and tensor format names against the registries,
element counts x element sizes against declared lengths), section
table tiling the payload exactly, per-section CRC32. Nothing is allocated from a size the file merely
claims: every claimed size is checked against the limits and the actual bytes first. Decoding a section is
bounded by its declared raw length, and any failure of a codec surfaces as CodecError. Must not import
torch; never unpickles or executes anything from the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import (
    ChecksumError,
    CodecError,
    FormatError,
    GolfpackError,
    MagicError,
    ManifestError,
    SectionTableError,
    TruncatedError,
    VersionError,
)
from packer import codecs
from packer import constants as C
from packer.manifest import decode_manifest, load_manifest

MIN_FILE_BYTES = C.HEADER_BYTES + C.TRAILER_BYTES


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
    manifest_json_bytes: int     # the manifest's decoded JSON (informative: equals manifest_bytes in 1.0)


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
    def trailer_sha256(self) -> str:
        """The stored trailer: the SHA-256 of every byte before it (not of the whole file)."""
        return self._data[-C.TRAILER_BYTES:].hex()

    @property
    def file_sha256(self) -> str:
        """The SHA-256 of the whole file, trailer included (what `sha256sum` prints)."""
        return hashlib.sha256(self._data).hexdigest()

    def section(self, name: str) -> SectionEntry:
        try:
            return self.by_name[name]
        except (KeyError, TypeError):
            raise FormatError(f"{self.source}: no section named {name!r:.80}") from None

    def stored(self, name: str) -> bytes:
        s = self.section(name)
        return self._data[s.offset:s.offset + s.stored_bytes]

    def raw(self, name: str) -> bytes:
        """The section's decoded bytes: exactly raw_bytes of them, or CodecError."""
        s = self.section(name)
        try:
            return codecs.decode(s.codec, self.stored(name), s.raw_bytes, s.params)
        except GolfpackError:
            raise
        except Exception as exc:  # noqa: BLE001 - a codec library's own error on hostile bytes is still ours
            raise CodecError(f"{self.source}: section {name!r} (codec {s.codec!r}, offset {s.offset}) cannot be "
                             f"decoded: {type(exc).__name__}: {exc}") from None

    def array(self, name: str) -> np.ndarray:
        """The section as a little-endian array of its declared dtype and shape (read-only)."""
        s = self.section(name)
        dtype, shape = s.params.get("dtype"), s.params.get("shape")
        if dtype is None:
            raise FormatError(f"{self.source}: section {name!r} declares no dtype/shape; it is not an array")
        raw = self.raw(name)   # exactly elements x element size bytes: the gate checked raw_bytes
        if dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            return bits.view(np.float32).reshape(shape)
        try:
            np_dtype = np.dtype(dtype).newbyteorder("<")
        except TypeError:
            raise FormatError(f"{self.source}: section {name!r} has dtype {dtype!r}, which has no numpy "
                              f"array type; decode it with its tensor format") from None
        return np.frombuffer(raw, dtype=np_dtype).reshape(shape)


def looks_like_artifact(path: Path) -> bool:
    """Whether the file at `path` starts with the artifact magic (what pack may replace without --force)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(C.MAGIC)) == C.MAGIC
    except OSError:
        return False


def read_artifact(source: Path | bytes) -> Artifact:
    """Read and validate an artifact from a path (a regular file) or from bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return parse_artifact(source, "<bytes>")
    where = str(source)
    try:   # non-blocking open, so a pipe named as an artifact cannot hang the reader before the check below
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FormatError(f"{where}: is not a regular file (a folder, device or pipe); an artifact is one "
                              f".gpk file")
        with os.fdopen(fd, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FormatError(f"{where}: no such file") from None
    except OSError as exc:
        raise FormatError(f"{where}: cannot read the file: {exc.strerror or exc}") from None
    return parse_artifact(data, where)


def parse_artifact(data: bytes, where: str = "<bytes>") -> Artifact:
    """Validate artifact bytes completely (FORMAT.md "Reading", in that order); decode nothing."""
    data = bytes(data)
    n = len(data)
    if n < MIN_FILE_BYTES:
        raise TruncatedError(f"{where}: {n} bytes is too short for a golfpack artifact (at least "
                             f"{MIN_FILE_BYTES}: header {C.HEADER_BYTES} + trailer {C.TRAILER_BYTES})")
    if data[:4] != C.MAGIC:
        raise MagicError(f"{where}: not a golfpack artifact (magic {data[:4]!r} at offset 0, expected "
                         f"{C.MAGIC!r})")
    major, minor, mlen = struct.unpack_from("<BBI", data, 4)
    if (major, minor) not in C.SUPPORTED_VERSIONS:
        raise VersionError(f"{where}: format version {major}.{minor} at offset 4 is not supported; this "
                           f"golfpack reads {sorted(C.SUPPORTED_VERSIONS)}")
    if mlen > C.MAX_MANIFEST_BYTES:
        raise ManifestError(f"{where}: manifest_len {mlen} at offset 6 exceeds the {C.MAX_MANIFEST_BYTES}-byte "
                            f"cap")
    payload_start = C.HEADER_BYTES + mlen
    payload_end = n - C.TRAILER_BYTES
    if payload_start > payload_end:
        raise TruncatedError(f"{where}: manifest_len {mlen} at offset 6 runs past the end of the {n}-byte file "
                             f"(needs at least {payload_start + C.TRAILER_BYTES}; truncated?)")
    view = memoryview(data)
    if hashlib.sha256(view[:payload_end]).digest() != data[payload_end:]:
        raise ChecksumError(f"{where}: SHA-256 of the file does not match its trailer at offset {payload_end}: "
                            f"the file is corrupted or truncated{_damaged_hint(data, payload_start)}")
    mjson = load_manifest(view[C.HEADER_BYTES:payload_start], minor)
    manifest = decode_manifest(mjson)
    sections = _section_table(manifest["sections"], payload_start, payload_end, where)
    for s in sections:
        crc = zlib.crc32(view[s.offset:s.offset + s.stored_bytes])
        if crc != s.crc32:
            raise ChecksumError(f"{where}: CRC32 of section {s.name!r} (file offset {s.offset}, "
                                f"{s.stored_bytes} bytes) is {crc:#010x}, the table says {s.crc32:#010x}")
    layout = Layout(C.HEADER_BYTES, mlen, payload_end - payload_start, C.TRAILER_BYTES, n, len(mjson))
    return Artifact(data, manifest, sections, layout, (major, minor), where)


def _section_table(table: list[dict], payload_start: int, payload_end: int, where: str) -> list[SectionEntry]:
    """Sections tile the payload: first at 0, each where the previous ends, the last at its end."""
    payload = payload_end - payload_start
    out, expected = [], 0
    for s in table:
        if s["offset"] != expected:
            raise SectionTableError(f"{where}: section {s['name']!r} starts at payload offset {s['offset']}, "
                                    f"expected {expected}: sections must tile the payload with no gap or overlap")
        if s["stored_bytes"] > payload - expected:      # compare before adding: no sum beyond the payload
            raise SectionTableError(f"{where}: section {s['name']!r} ({s['stored_bytes']} stored bytes at "
                                    f"payload offset {expected}) runs past the payload's {payload} bytes")
        expected += s["stored_bytes"]
        out.append(SectionEntry(s["name"], s["codec"], s["params"], payload_start + s["offset"],
                                s["stored_bytes"], s["raw_bytes"], s["crc32"]))
    if expected != payload:
        raise SectionTableError(f"{where}: sections cover {expected} payload bytes but the payload has "
                                f"{payload}: {payload - expected} bytes are unaccounted for")
    return out


def _damaged_hint(data: bytes, payload_start: int) -> str:
    """Best effort, cheap: name the first section whose CRC32 fails, if the section table still parses.

    The bytes are unverified here, so nothing from them is trusted: any failure just drops the hint (the
    version passed its check, and a 1.1 manifest is decoded with the same bound as always).
    """
    try:
        table = json.loads(load_manifest(data[C.HEADER_BYTES:payload_start], data[5]).decode("ascii"))["sections"]
        for s in table:
            a = payload_start + s["offset"]
            if zlib.crc32(data[a:a + s["stored_bytes"]]) != s["crc32"]:
                return f" (section {str(s['name'])[:80]!r} fails its CRC32)"
        return ""
    except Exception:  # noqa: BLE001 - only a hint on hostile bytes; the checksum error stands either way
        return " (the manifest itself is damaged)"
