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


def sized_section(name: str, raw: bytes, params: dict, opts: PackOptions) -> tuple[SectionSpec, int]:
    """The section spec storing `raw` most compactly, and the number of bytes it stores."""
    best = (SectionSpec(name, raw, "raw", dict(params)), len(raw))
    for codec in dict.fromkeys((opts.codec, *opts.extra_codecs)):
        cp = dict(params, **_codec_params(opts, codec))
        n = len(codecs.encode(codec, raw, cp))
        if n < best[1]:
            best = (SectionSpec(name, raw, codec, cp), n)
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
