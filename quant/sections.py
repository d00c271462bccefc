"""An encoded tensor's sections: one per role, each stored with the smallest codec, and its exact bytes.

Owns the section layout of an encoded tensor (roles in sorted order, named `<prefix>/<role>`, dtype and shape
in the params, `bits` on codes) and the codec choice: the smallest of opts.codec, opts.extra_codecs (in that
order on ties) and raw storage (which wins ties), measured by really encoding. The byte counts returned are
exactly what the writer stores. Must not choose formats or build whole artifacts (quant/assemble.py).
"""

from __future__ import annotations

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


def sized_section(name: str, raw: bytes, params: dict, opts: PackOptions) -> tuple[SectionSpec, int]:
    """The section spec storing `raw` most compactly among the codecs tried, and the bytes it stores.

    Every codec of opts is tried, except on quantized code sections over CODES_ANS_ONLY_ABOVE bytes, which are
    stored with ans when it is among them: ans beat brotli-11 (with and without byte shuffle) and zstd-22 on
    every real code set (bench/results/entropy.md), and those run at 0.5-2 M codes/s against ans's 15-50:
    at 36M parameters trying them took minutes. Raw storage wins ties."""
    best = (SectionSpec(name, raw, "raw", dict(params), bytes(raw)), len(raw))
    tried = list(dict.fromkeys((opts.codec, *opts.extra_codecs)))
    if "ans" in tried and _is_large_codes(raw, params):
        tried = ["ans"]
    for codec in tried:
        cp = dict(params, **_codec_params(opts, codec))
        stored = codecs.encode(codec, raw, cp)
        if len(stored) < best[1]:
            best = (SectionSpec(name, raw, codec, cp, stored), len(stored))
    return best


def tensor_sections(name: str, enc: formats.Encoded, opts: PackOptions,
                    prefix: str | None = None) -> tuple[dict, list[SectionSpec], int]:
    """(manifest entry, sections, payload bytes they occupy) of one encoded tensor; sections are named
    `<prefix>/<role>` (prefix default: the tensor's name)."""
    fmt = formats.get(enc.format)
    specs, roles, stored_bytes = [], {}, 0
    for role in sorted(enc.arrays):
        arr = np.ascontiguousarray(enc.arrays[role])
        params = {"dtype": fmt.section_dtype(role, arr), "shape": list(arr.shape)}
        if role == "codes":
            params["bits"] = enc.bits
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        sec_name = f"{name if prefix is None else prefix}/{role}"
        spec, n = sized_section(sec_name, raw, params, opts)
        specs.append(spec)
        stored_bytes += n
        roles[role] = sec_name
    entry = {"format": enc.format, "sections": roles}
    if enc.scale is not None:
        entry["scale"] = enc.scale
    return entry, specs, stored_bytes
