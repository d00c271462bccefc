"""Counting the code a scorer must ship beside the artifact.

By default the golfpack runtime modules needed to read and run an artifact (RUNTIME_MODULES, relative to
the repository/site root that holds the packages), concatenated and compressed with lzma: what a
self-extracting decoder of them would need. Files the user names are counted as they are shipped, byte for
byte (Parameter Golf counts a submission script's size; `golfpack export-submission` writes one whose
code is already lzma + base85 self-extracting). Both counts are exact for the given files.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass
from pathlib import Path

from common.errors import UsageError

RUNTIME_MODULES = (
    "common/__init__.py", "common/errors.py",
    "packer/__init__.py", "packer/constants.py", "packer/manifest.py", "packer/codecs.py", "packer/reader.py",
    # packer/codecs.py imports the ANS codec at module level, and it imports these (its encoders -- encode.py,
    # fit.py, grid_encode.py -- are imported only when encoding, and no encoder is needed to read):
    "packer/entropy/__init__.py", "packer/entropy/codec.py", "packer/entropy/models.py",
    "packer/entropy/blob.py", "packer/entropy/param.py", "packer/entropy/exact.py",
    "packer/entropy/grid.py", "packer/entropy/refs.py",
    "quant/__init__.py", "quant/primitives.py", "quant/formats.py", "quant/unpack.py",
    "core/__init__.py", "core/config.py", "core/layers.py", "core/model.py",
    "core/pgolf_model.py", "core/families.py",
)
CODE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CodeCount:
    files: tuple[str, ...]
    raw_bytes: int
    compressed_bytes: int
    method: str


def count_code(files: list[Path] | None = None) -> CodeCount:
    """Runtime modules: lzma (preset 9e, xz container) of their bytes, each preceded by its name and length.
    Named files: the sum of their sizes, as shipped."""
    if files is not None:
        paths = [Path(f) for f in files]
        sizes = []
        for path in paths:
            try:
                sizes.append(len(path.read_bytes()))
            except OSError as exc:
                raise UsageError(f"cannot read code file {path} to count its bytes: {exc.strerror}") from None
        return CodeCount(tuple(str(p) for p in paths), sum(sizes), sum(sizes), "files as shipped")
    paths = [CODE_ROOT / rel for rel in RUNTIME_MODULES]
    names = list(RUNTIME_MODULES)
    blob = bytearray()
    for name, path in zip(names, paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read code file {path} to count its bytes: {exc.strerror}") from None
        blob += f"{name}\n{len(data)}\n".encode() + data
    packed = lzma.compress(bytes(blob), preset=9 | lzma.PRESET_EXTREME)
    return CodeCount(tuple(names), len(blob), len(packed), "lzma-9e")
