"""Assemble an artifact: encode each section with its codec, lay out header, manifest, payload, trailer.

Layout (FORMAT.md): MAGIC | major u8 | minor u8 | manifest_len u32 LE | manifest | payload | SHA-256, the
manifest being canonical JSON, stored as it is (1.0) or as one brotli stream (1.1, what this writes).
The section table lives in the manifest (`sections`), with offsets relative to the payload start, so the
bytes are a pure function of the inputs. Must not import torch.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from common.atomic import refuse_same_path, write_bytes_atomic
from common.errors import FormatError
from packer import codecs
from packer import constants as C
from packer.manifest import encode_manifest, store_manifest, validate_manifest
from packer.reader import parse_artifact


@dataclass(frozen=True)
class SectionSpec:
    """One section to store: its raw bytes, the codec to store them with, and the codec's params; `stored`, when
    the caller already encoded them (sizing does), saves encoding twice (the writer still checks it decodes to
    `raw`)."""

    name: str
    raw: bytes
    codec: str = "zstd"
    params: dict = field(default_factory=dict)
    stored: bytes | None = field(default=None, repr=False)


def build_artifact(body: dict, sections: list[SectionSpec], minor: int = C.FORMAT_MINOR) -> bytes:
    """The artifact bytes for a manifest body (everything but `sections`) and the sections, in order, in
    format version 1.<minor> (1.0 keeps the manifest as plain JSON; readers take both)."""
    if (C.FORMAT_MAJOR, minor) not in C.SUPPORTED_VERSIONS:
        raise FormatError(f"cannot write format version {C.FORMAT_MAJOR}.{minor}; this golfpack writes "
                          f"{sorted(C.SUPPORTED_VERSIONS)}")
    if "sections" in body:
        raise FormatError("the manifest body must not carry 'sections'; the writer builds the section table")
    table, payload, offset = [], [], 0
    for spec in sections:
        stored = spec.stored if spec.stored is not None else codecs.encode(spec.codec, spec.raw, spec.params)
        if codecs.decode(spec.codec, stored, len(spec.raw), spec.params) != bytes(spec.raw):
            raise FormatError(f"section {spec.name!r}: codec {spec.codec!r} did not round-trip; not writing")
        table.append({"name": spec.name, "codec": spec.codec, "params": spec.params, "offset": offset,
                      "stored_bytes": len(stored), "raw_bytes": len(spec.raw),
                      "crc32": zlib.crc32(stored)})
        payload.append(stored)
        offset += len(stored)
    manifest = dict(body, sections=table)
    validate_manifest(manifest)
    mjson = encode_manifest(manifest)
    if len(mjson) > C.MAX_MANIFEST_BYTES:
        raise FormatError(f"manifest is {len(mjson)} bytes, over the {C.MAX_MANIFEST_BYTES}-byte limit")
    mbytes = store_manifest(mjson, minor)
    head = C.MAGIC + struct.pack("<BBI", C.FORMAT_MAJOR, minor, len(mbytes))
    data = b"".join([head, mbytes, *payload])
    return data + hashlib.sha256(data).digest()


def write_artifact(path: Path, data: bytes, inputs: list[Path] = ()) -> None:
    """Write atomically; refuse to overwrite any of the inputs, and refuse bytes the reader would reject.

    The temporary file lives in the destination folder and is fsynced before it is renamed over `path`, so
    an existing file there is replaced only by a complete, valid artifact (common.atomic).
    """
    refuse_same_path(path, list(inputs))
    parse_artifact(data, f"artifact about to be written to {path}")
    write_bytes_atomic(path, data)
