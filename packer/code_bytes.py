"""Counting the code a scorer must ship beside the artifact: files concatenated, compressed with lzma.

By default the golfpack runtime modules needed to read and run an artifact (RUNTIME_MODULES, relative to
the repository/site root that holds the packages). The count is exact for the given files.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass
from pathlib import Path

from packer.errors import UsageError

RUNTIME_MODULES = (
    "packer/__init__.py", "packer/errors.py", "packer/constants.py", "packer/manifest.py",
    "packer/codecs.py", "packer/reader.py",
    "quant/__init__.py", "quant/primitives.py", "quant/formats.py",
    "core/__init__.py", "core/config.py", "core/layers.py", "core/model.py",
    "verify/__init__.py", "verify/load.py",
)
CODE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CodeCount:
    files: tuple[str, ...]
    raw_bytes: int
    compressed_bytes: int
    method: str


def count_code(files: list[Path] | None = None) -> CodeCount:
    """lzma (preset 9e, xz container) of the files' bytes, each preceded by its name and length."""
    if files is None:
        paths = [CODE_ROOT / rel for rel in RUNTIME_MODULES]
        names = list(RUNTIME_MODULES)
    else:
        paths = [Path(f) for f in files]
        names = [str(p) for p in paths]
    blob = bytearray()
    for name, path in zip(names, paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read code file {path} to count its bytes: {exc.strerror}") from None
        blob += f"{name}\n{len(data)}\n".encode() + data
    packed = lzma.compress(bytes(blob), preset=9 | lzma.PRESET_EXTREME)
    return CodeCount(tuple(names), len(blob), len(packed), "lzma-9e")
