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


SAMPLE_ABOVE = 1 << 16        # code sections larger than this (bytes) try the slow codecs on a sample first
SAMPLE_BYTES = 1 << 13        # the sample: this many bytes of whole rows, spread evenly over the matrix
SAMPLED_FIRST = "ans"         # the codec every large section is encoded with in full


def _row_sample(raw: bytes, params: dict) -> tuple[bytes, dict] | None:
    """About SAMPLE_BYTES of whole rows spread evenly over a matrix section, with its params; None when
    the section is no [rows, ...] matrix of codes."""
    shape = params.get("shape")
    if params.get("dtype") != "int8" or not shape or len(shape) < 2 or shape[0] < 2:
        return None
    rows = np.frombuffer(raw, np.int8).reshape(shape[0], -1)
    k = max(1, min(rows.shape[0], SAMPLE_BYTES // max(1, rows.shape[1])))
    pick = rows[np.linspace(0, rows.shape[0] - 1, k).round().astype(np.int64)]
    return pick.tobytes(), dict(params, shape=[k, rows.shape[1]])


def sized_section(name: str, raw: bytes, params: dict, opts: PackOptions) -> tuple[SectionSpec, int]:
    """The section spec storing `raw` most compactly among the codecs tried, and the bytes it stores.

    Every codec of opts is tried in full, except on code matrices over SAMPLE_ABOVE bytes: there the ans
    codec runs in full and each other codec first on an even sample of rows, in full only if its sample is
    smaller than ans's sample (zstd-22 and brotli-11 run at 0.5-2 M codes/s, ans at over 10: at 36M parameters
    trying them everywhere took minutes and they rarely win on codes). Raw storage wins ties."""
    best = (SectionSpec(name, raw, "raw", dict(params), bytes(raw)), len(raw))
    tried = list(dict.fromkeys((opts.codec, *opts.extra_codecs)))
    sample = _row_sample(raw, params) if len(raw) > SAMPLE_ABOVE and SAMPLED_FIRST in tried else None
    sample_bytes = {}
    if sample is not None:
        for codec in tried:
            cp = dict(sample[1], **_codec_params(opts, codec))
            sample_bytes[codec] = len(codecs.encode(codec, sample[0], cp))
    for codec in tried:
        if sample is not None and codec != SAMPLED_FIRST and sample_bytes[codec] >= sample_bytes[SAMPLED_FIRST]:
            continue
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
