"""An encoded tensor's sections: one per role, each stored with the smallest codec, and its exact bytes.

Owns the section layout of an encoded tensor (roles in sorted order, named `<prefix>/<role>`, dtype and shape
in the params, `bits` on codes) and the codec choice: the smallest of opts.codec, opts.extra_codecs (in that
order on ties) and raw storage (which wins ties), measured by really encoding. The byte counts returned are
exactly what the writer stores. Must not choose formats or build whole artifacts (quant/assemble.py).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np

from packer import codecs
from packer.writer import SectionSpec
from quant import formats
from quant.options import PackOptions


def _codec_params(opts: PackOptions, codec: str) -> dict:
    return {"level": opts.zstd_level} if codec == "zstd" else {}


CODES_ANS_ONLY_ABOVE = 1 << 16     # code sections larger than this (bytes) are stored with ans alone


def _is_large_codes(raw: bytes, params: dict) -> bool:
    return params.get("dtype") == "int8" and "bits" in params and len(raw) > CODES_ANS_ONLY_ABOVE


class _SizedCache:
    """The codec choice and stored bytes of sections already sized in this process, keyed by the raw bytes'
    digest, params and the codecs tried: the planner packs the same chosen encodings several times (trial
    and confirming packs), and re-encoding every section each time cost a minute at 36M parameters. LRU,
    bounded by stored bytes."""

    LIMIT = 256 << 20

    def __init__(self) -> None:
        self.items: OrderedDict[bytes, tuple[str, dict, bytes]] = OrderedDict()
        self.size = 0

    @staticmethod
    def key(raw: bytes, params: dict, tried: list[str], opts: PackOptions) -> bytes:
        h = hashlib.blake2b(raw, digest_size=20)
        h.update(json.dumps([params, tried, [_codec_params(opts, c) for c in tried]], sort_keys=True).encode())
        return h.digest()

    def get(self, key: bytes) -> tuple[str, dict, bytes] | None:
        hit = self.items.get(key)
        if hit is not None:
            self.items.move_to_end(key)
        return hit

    def put(self, key: bytes, value: tuple[str, dict, bytes]) -> None:
        self.items[key] = value
        self.size += len(value[2])
        while self.size > self.LIMIT and self.items:
            self.size -= len(self.items.popitem(last=False)[1][2])


_SIZED = _SizedCache()


def sized_section(name: str, raw: bytes, params: dict, opts: PackOptions, cache: bool = False
                  ) -> tuple[SectionSpec, int]:
    """The section spec storing `raw` most compactly among the codecs tried, and the bytes it stores.

    Every codec of opts is tried, except on quantized code sections over CODES_ANS_ONLY_ABOVE bytes, which are
    stored with ans when it is among them: ans beat brotli-11 (with and without byte shuffle) and zstd-22 on
    every real code set (bench/results/entropy.md), and those run at 0.5-2 M codes/s against ans's 15-50:
    at 36M parameters trying them took minutes. Raw storage wins ties. `cache` (whole-artifact packs, which
    the planner repeats with mostly the same encodings) reuses this process's earlier choice for the same
    raw bytes, params and codecs (_SizedCache); the per-candidate sizing in worker processes does not cache."""
    tried = list(dict.fromkeys((opts.codec, *opts.extra_codecs)))
    if "ans" in tried and _is_large_codes(raw, params):
        tried = ["ans"]
    key = _SizedCache.key(raw, params, tried, opts) if cache else None
    hit = _SIZED.get(key) if cache else None
    if hit is not None:
        codec, cp, stored = hit
        return SectionSpec(name, raw, codec, dict(cp), stored), len(stored)
    best = (SectionSpec(name, raw, "raw", dict(params), bytes(raw)), len(raw))
    for codec in tried:
        cp = dict(params, **_codec_params(opts, codec))
        stored = codecs.encode(codec, raw, cp)
        if len(stored) < best[1]:
            best = (SectionSpec(name, raw, codec, cp, stored), len(stored))
    if cache:
        _SIZED.put(key, (best[0].codec, dict(best[0].params), best[0].stored))
    return best


def tensor_sections(name: str, enc: formats.Encoded, opts: PackOptions,
                    prefix: str | None = None, cache: bool = False) -> tuple[dict, list[SectionSpec], int]:
    """(manifest entry, sections, payload bytes they occupy) of one encoded tensor; sections are named
    `<prefix>/<role>` (prefix default: the tensor's name); `cache` as in sized_section."""
    fmt = formats.get(enc.format)
    specs, roles, stored_bytes = [], {}, 0
    for role in sorted(enc.arrays):
        arr = np.ascontiguousarray(enc.arrays[role])
        params = {"dtype": fmt.section_dtype(role, arr), "shape": list(arr.shape)}
        if role == "codes":
            params["bits"] = enc.bits
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        sec_name = f"{name if prefix is None else prefix}/{role}"
        spec, n = sized_section(sec_name, raw, params, opts, cache)
        specs.append(spec)
        stored_bytes += n
        roles[role] = sec_name
    entry = {"format": enc.format, "sections": roles}
    if enc.scale is not None:
        entry["scale"] = enc.scale
    return entry, specs, stored_bytes
