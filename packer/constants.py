"""Constants of the artifact format. Names here are part of the format: never rename or renumber them.

See FORMAT.md for the byte-level layout these constants describe.
"""

from __future__ import annotations

MAGIC = b"GPAK"
FORMAT_MAJOR = 1
FORMAT_MINOR = 1                      # what the writer writes
SUPPORTED_VERSIONS = frozenset({(1, 0), (1, 1)})
# How each minor version stores the manifest's canonical JSON: 1.0 as it is, 1.1 as one brotli stream.
MANIFEST_STORAGE = {0: "json", 1: "brotli"}

HEADER_BYTES = 10          # magic (4) + major (u8) + minor (u8) + manifest length (u32 LE)
TRAILER_BYTES = 32         # SHA-256 of every byte before it
MAX_MANIFEST_BYTES = 1 << 20          # stored manifest bytes, and (1.1) its decoded JSON too
MAX_SECTIONS = 4096
MAX_TENSOR_ELEMENTS = 1 << 31
MAX_NAME_CHARS = 200
MAX_JSON_DEPTH = 16
MAX_SHAPE_DIMS = 8
MAX_TENSORS = 16384
MAX_NUMBER_CHARS = 32                 # longest JSON number token in a manifest (an int64 needs 20)
MAX_SECTION_RAW_BYTES = 1 << 32       # decoded size of one section; checked before anything is decoded
MAX_TOTAL_RAW_BYTES = 1 << 34         # decoded size of all sections together

# Element types a section may declare in params["dtype"], with their sizes in bytes.
DTYPES = {"int8": 1, "uint8": 1, "float16": 2, "bfloat16": 2, "float32": 4}

# Tensor storage formats the reader accepts (quant/formats.py implements each; a test keeps them in step).
# Integer formats: `int<b>_row` (one fp16 scale per row) and `int<b>_g<n>` (one per group of n values of a
# row), b = 3..8; `ternary_row` / `ternary_g<n>` (codes -1/0/1, absmean scale); `nf4_g<n>` (bitsandbytes NF4,
# n values per fp16 absmax block of the flattened tensor). FORMAT.md "Tensor formats" defines each.
GROUP_SIZES = (32, 64, 128, 256)
TENSOR_FORMATS = frozenset({"fp32", "fp16", "bf16", "int8_row", "int7_row", "int6_row", "int5_row",
                            "int4_row", "int3_row", "ternary_row"}
                           | {f"int{b}_g{n}" for b in range(3, 9) for n in GROUP_SIZES}
                           | {f"ternary_g{n}" for n in GROUP_SIZES} | {f"nf4_g{n}" for n in GROUP_SIZES})
# How a tensor's scales were chosen (manifest tensor entry `scale`, informative): FORMAT.md lists them.
SCALE_METHODS = frozenset({"absmax", "clip_search", "sdclip", "absmean", "gptq"})
