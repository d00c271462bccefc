"""Codec registry: how a section's raw bytes become stored bytes and back, exactly.

Each codec is registered once under a stable name that the section table records. A codec is a pair of
pure functions over bytes; `params` is a small JSON-able dict stored with the section (for example the
element dtype and shape that a model-based coder needs). Decoding is bounded: it must produce exactly
`raw_len` bytes or raise CodecError. Must not import torch.
"""

from __future__ import annotations

import lzma
from collections.abc import Callable
from dataclasses import dataclass

import brotli
import numpy as np
import zstandard

from common.errors import CodecError
from packer.entropy import codec as ans

BROTLI_QUALITY = 11
DTYPE_BYTES = ans.DTYPE_BYTES

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


DECODE_CHUNK_BYTES = 1 << 20


def _zstd_decode(stored: bytes, raw_len: int, params: dict) -> bytes:
    # Streamed in bounded chunks: memory follows the real output, never the raw_len a file claims (a one-shot
    # decompress(max_output_size=raw_len) allocates raw_len up front). Output past raw_len, or bytes after
    # the frame, are errors, so the stored bytes have exactly one meaning.
    chunks, got = [], 0
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=False)
        while got <= raw_len:
            chunk = reader.read(min(DECODE_CHUNK_BYTES, raw_len + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except zstandard.ZstdError as exc:
        raise CodecError(f"zstd payload is corrupt: {exc}") from None
    if got > raw_len:
        raise CodecError(f"zstd payload decodes to more than the declared {raw_len} bytes")
    return b"".join(chunks)


# --- lzma (raw xz filter chain, no container overhead) -----------------------------------------------------
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def _lzma_encode(raw: bytes, params: dict) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)


def _lzma_decode(stored: bytes, raw_len: int, params: dict) -> bytes:
    try:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        out = dec.decompress(stored, max_length=raw_len)
        if len(out) == raw_len and not dec.eof and dec.decompress(b"", max_length=1):
            raise CodecError(f"lzma payload decodes to more than the declared {raw_len} bytes")
    except lzma.LZMAError as exc:
        raise CodecError(f"lzma payload is corrupt: {exc}") from None
    if not dec.eof:   # the stream must end exactly: one meaning per stored byte, nothing ignored
        raise CodecError("lzma payload ends before its end-of-stream marker (truncated or corrupt)")
    if dec.unused_data:
        raise CodecError(f"lzma payload has {len(dec.unused_data)} bytes after its end-of-stream marker")
    return out


# --- brotli (quality 11; optionally byte-shuffled by the element size of params' dtype) -----------------------------------------------------------------------------------------------
def _itemsize(params: dict) -> int:
    return DTYPE_BYTES.get(params.get("dtype", "uint8"), 1)


def shuffle(raw: bytes, size: int) -> bytes:
    """Byte shuffle: all first bytes of the elements, then all second bytes, ... (identity for size 1)."""
    if size == 1 or len(raw) % size:
        return bytes(raw)
    return np.frombuffer(bytes(raw), np.uint8).reshape(-1, size).T.tobytes()


def unshuffle(data: bytes, size: int) -> bytes:
    if size == 1 or len(data) % size:
        return bytes(data)
    return np.frombuffer(data, np.uint8).reshape(size, -1).T.tobytes()


def brotli_encode(raw: bytes, params: dict) -> bytes:
    return brotli.compress(bytes(raw), quality=BROTLI_QUALITY)


def brotli_decode_at_most(stored: bytes, limit: int) -> bytes:
    """One finished brotli stream, nothing after it, decoding to at most `limit` bytes (memory stays bounded
    by the limit, never by what the stream would expand to), or CodecError."""
    dec = brotli.Decompressor()
    try:
        out = dec.process(bytes(stored), output_buffer_limit=limit + 1)
    except brotli.error as exc:   # includes bytes after the end of the stream
        raise CodecError(f"brotli stream is corrupt or has bytes after its end: {exc}") from None
    if len(out) > limit:
        raise CodecError(f"brotli stream decodes to more than {limit} bytes")
    if not dec.is_finished():
        raise CodecError(f"brotli stream ends before it is finished after {len(out)} decoded bytes (truncated "
                         f"or corrupt)")
    return out


def brotli_decode(stored: bytes, raw_len: int, params: dict) -> bytes:
    out = brotli_decode_at_most(stored, raw_len)
    if len(out) != raw_len:
        raise CodecError(f"brotli payload decodes to {len(out)} bytes, not the declared {raw_len}; the section "
                         f"is corrupt")
    return out


def brotli_shuffle_encode(raw: bytes, params: dict) -> bytes:
    return brotli_encode(shuffle(raw, _itemsize(params)), params)


def brotli_shuffle_decode(stored: bytes, raw_len: int, params: dict) -> bytes:
    return unshuffle(brotli_decode(stored, raw_len, params), _itemsize(params))


register("raw", _raw_encode, _raw_decode)
register("zstd", _zstd_encode, _zstd_decode)
register("lzma", _lzma_encode, _lzma_decode)
register("brotli", brotli_encode, brotli_decode)
register("brotli-shuffle", brotli_shuffle_encode, brotli_shuffle_decode)
register("ans", ans.ans_encode, ans.ans_decode)
