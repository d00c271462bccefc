"""Codec registry: how a section's raw bytes become stored bytes and back, exactly.

Each codec is registered once under a stable name that the section table records. A codec is a pair of
pure functions over bytes; `params` is a small JSON-able dict stored with the section (for example the
element dtype and shape that a model-based coder needs). Decoding is bounded: it must produce exactly
`raw_len` bytes or raise CodecError. Must not import torch.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass
from typing import Callable

import zstandard

from packer.errors import CodecError

Encoder = Callable[[bytes, dict], bytes]
Decoder = Callable[[bytes, int, dict], bytes]


@dataclass(frozen=True)
class Codec:
    name: str
    encode: Encoder
    decode: Decoder


_REGISTRY: dict[str, Codec] = {}


def register(name: str, encode: Encoder, decode: Decoder) -> None:
    if name in _REGISTRY:
        raise CodecError(f"codec {name!r} is registered twice")
    _REGISTRY[name] = Codec(name, encode, decode)


def get(name: str) -> Codec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CodecError(f"unknown codec {name!r}; this golfpack knows {sorted(_REGISTRY)}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def encode(name: str, raw: bytes, params: dict | None = None) -> bytes:
    return get(name).encode(raw, params or {})


def decode(name: str, stored: bytes, raw_len: int, params: dict | None = None) -> bytes:
    out = get(name).decode(stored, raw_len, params or {})
    if len(out) != raw_len:
        raise CodecError(f"codec {name!r} decoded {len(out)} bytes where the section table declares {raw_len}")
    return out


# --- raw ---------------------------------------------------------------------------------------------------
def _raw_encode(raw: bytes, params: dict) -> bytes:
    return bytes(raw)


def _raw_decode(stored: bytes, raw_len: int, params: dict) -> bytes:
    return bytes(stored)


# --- zstd --------------------------------------------------------------------------------------------------
ZSTD_DEFAULT_LEVEL = 22


def _zstd_encode(raw: bytes, params: dict) -> bytes:
    level = int(params.get("level", ZSTD_DEFAULT_LEVEL))
    # Single-threaded, no frame content checksum (the section has its own CRC32), no dict id: deterministic.
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=False, write_content_size=False,
                                    write_dict_id=False, threads=0)
    return cctx.compress(raw)


def _zstd_decode(stored: bytes, raw_len: int, params: dict) -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(stored, max_output_size=raw_len)
    except zstandard.ZstdError as exc:
        raise CodecError(f"zstd payload is corrupt: {exc}") from None


# --- lzma (raw xz filter chain, no container overhead) -----------------------------------------------------
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def _lzma_encode(raw: bytes, params: dict) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)


def _lzma_decode(stored: bytes, raw_len: int, params: dict) -> bytes:
    try:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        out = dec.decompress(stored, max_length=raw_len)
    except lzma.LZMAError as exc:
        raise CodecError(f"lzma payload is corrupt: {exc}") from None
    return out


register("raw", _raw_encode, _raw_decode)
register("zstd", _zstd_encode, _zstd_decode)
register("lzma", _lzma_encode, _lzma_decode)
