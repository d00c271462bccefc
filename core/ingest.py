"""Readers for foreign checkpoints: a torch.save state_dict (`.pt`), safetensors, and Parameter Golf's `.ptz`.

Owns format detection by content (magic bytes, not the suffix), the safe loads (torch.load only with
weights_only=True, so no file can run code), and decoding the baseline `.ptz` export (zlib of a tensors-only
torch.save dict tagged `int8_clean_per_row_v1`), dequantized exactly as train_gpt.py's
`dequantize_state_dict_int8` defines it. Inputs are opened read-only and never modified.
Must not: build models, guess architectures (see core/pgolf_model.py), or write anything.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors

from common.errors import CheckpointError

ACCEPTED_FORMATS = ("torch.save state_dict (.pt, zip or legacy)", "safetensors",
                    "Parameter Golf int8_clean_per_row_v1 export (.ptz, zlib)")
PTZ_TAG = "int8_clean_per_row_v1"
PTZ_REQUIRED_KEYS = ("quantized", "scales", "dtypes", "passthrough")   # qmeta, passthrough_orig_dtypes optional
DEFAULT_MAX_DECOMPRESSED_BYTES = 4 * 1024**3
_FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "float64": torch.float64}
# what torch.load raises on damaged zip / legacy containers (measured by truncating and flipping bytes)
_CORRUPT_LOAD_ERRORS = (RuntimeError, EOFError, ValueError, OSError, LookupError, TypeError, AttributeError,
                        struct.error)
_SUFFIX_FORMAT = {".pt": "pt", ".pth": "pt", ".bin": "pt", ".safetensors": "safetensors", ".ptz": "ptz"}


@dataclass(frozen=True)
class IngestedCheckpoint:
    """Tensors under the checkpoint's own names, in the dtype the source format defines (`.ptz`: restored)."""

    tensors: dict[str, torch.Tensor]
    source_format: str            # 'pt' | 'safetensors' | 'ptz'
    source_sha256: str
    notes: dict = field(default_factory=dict)


def detect_format(head: bytes, size_bytes: int) -> str | None:
    """'pt', 'safetensors', 'ptz' from a file's first 16 bytes and its size; None when none matches."""
    if head.startswith(b"PK\x03\x04"):
        return "pt"                                   # torch.save's zip container
    if len(head) >= 9 and head[8:9] == b"{":
        (header_bytes,) = struct.unpack("<Q", head[:8])
        if 2 <= header_bytes <= size_bytes - 8:
            return "safetensors"                      # u64 LE header length, then the JSON header
    if head[:2] == b"\x80\x02":
        return "pt"                                   # torch.save's legacy (pre-1.6) pickle container
    if len(head) >= 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0:
        return "ptz"                                  # zlib stream header (deflate, valid check bits)
    return None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _torch_load(source, where: str):
    """torch.load with weights_only=True; anything it refuses or cannot parse is a CheckpointError."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:                            # re-raised unless it is one of the two kinds named
        if type(exc).__name__ != "UnpicklingError":       # weights_only's refusal, matched by name: no pickle here
            if isinstance(exc, _CORRUPT_LOAD_ERRORS):
                raise CheckpointError(f"{where}: not a readable torch.save file ({type(exc).__name__}: {exc})") from None
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{where}: torch.load(weights_only=True) refuses to unpickle arbitrary objects, and golfpack never "
            f"loads a checkpoint any other way ({first}). Re-save it as a plain state_dict of tensors "
            f"(torch.save(model.state_dict(), ...)) or as safetensors; if it is one already, it is corrupt") from None


def _tensor_dict(obj, where: str, notes: dict) -> dict[str, torch.Tensor]:
    """The state_dict inside a torch.load result: a dict of tensors, or one under 'state_dict' / 'model'."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: holds a {type(obj).__name__}, expected a dict of tensors (a state_dict)")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                notes["wrapped_under"] = key
                obj = inner
                break
    out: dict[str, torch.Tensor] = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{where}: key {name!r} is not a string; a state_dict maps names to tensors")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: key {name!r} holds a {type(value).__name__}, not a tensor; "
                                  f"pass a plain state_dict")
        out[name] = value
    if not out:
        raise CheckpointError(f"{where}: holds no tensors")
    return out


def _inflate(raw: bytes, where: str, max_bytes: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise CheckpointError(f"{where}: corrupt zlib stream ({exc})") from None
    if len(out) > max_bytes:
        raise CheckpointError(f"{where}: decompresses to more than {max_bytes} bytes; refusing "
                              f"(raise max_decompressed_bytes if the file is trusted and really that large)")
    if not d.eof:
        raise CheckpointError(f"{where}: zlib stream is truncated (ends after {len(raw)} bytes without its end "
                              f"marker); the file is incomplete")
    if d.unused_data:
        raise CheckpointError(f"{where}: {len(d.unused_data)} bytes follow the end of the zlib stream")
    return out


def _dtype(name: str, tensor_name: str, where: str) -> torch.dtype:
    if not isinstance(name, str) or name not in _FLOAT_DTYPES:
        raise CheckpointError(f"{where}: tensor {tensor_name!r} names dtype {name!r}; "
                              f"supported: {sorted(_FLOAT_DTYPES)}")
    return _FLOAT_DTYPES[name]


def _section(obj: dict, key: str, where: str, required: bool) -> dict:
    if key not in obj:
        if required:
            raise CheckpointError(f"{where}: {PTZ_TAG} dict lacks its {key!r} entry")
        return {}
    value = obj[key]
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: {PTZ_TAG} entry {key!r} is a {type(value).__name__}, expected a dict")
    return value


def dequantize_int8_clean(obj, where: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Decode an `int8_clean_per_row_v1` dict as train_gpt.py does; returns (tensors, notes)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: the .ptz payload is a {type(obj).__name__}, expected a tagged dict")
    tag = obj.get("__quant_format__")
    if tag != PTZ_TAG:
        raise CheckpointError(f"{where}: .ptz quant format tag {tag!r} is not supported; only {PTZ_TAG!r} is")
    quantized, scales, dtypes, passthrough = (_section(obj, k, where, True) for k in PTZ_REQUIRED_KEYS)
    qmeta = _section(obj, "qmeta", where, False)
    orig_dtypes = _section(obj, "passthrough_orig_dtypes", where, False)
    out: dict[str, torch.Tensor] = {}
    for name, q in quantized.items():
        if not isinstance(q, torch.Tensor) or q.dtype != torch.int8 or q.ndim == 0:
            raise CheckpointError(f"{where}: quantized tensor {name!r} must be an int8 tensor of rank >= 1")
        s = scales.get(name)
        if not isinstance(s, torch.Tensor) or not s.is_floating_point():
            raise CheckpointError(f"{where}: quantized tensor {name!r} has no floating-point scale in 'scales'")
        dtype = _dtype(dtypes.get(name), name, where)
        meta = qmeta.get(name, {})
        per_row = (isinstance(meta, dict) and meta.get("scheme") == "per_row") or s.ndim > 0
        if per_row:
            if s.numel() != q.shape[0]:
                raise CheckpointError(f"{where}: tensor {name!r} has {q.shape[0]} rows but {s.numel()} scales")
            row_scale = s.to(torch.float32).view(q.shape[0], *([1] * (q.ndim - 1)))
            out[name] = (q.float() * row_scale).to(dtype=dtype).contiguous()
        else:
            out[name] = (q.float() * float(s.item())).to(dtype=dtype).contiguous()
    for name, t in passthrough.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{where}: passthrough entry {name!r} is a {type(t).__name__}, not a tensor")
        if name in out:
            raise CheckpointError(f"{where}: tensor {name!r} is both quantized and passthrough")
        restored = t.detach().contiguous()
        if name in orig_dtypes:
            restored = restored.to(dtype=_dtype(orig_dtypes[name], name, where)).contiguous()
        out[name] = restored
    notes = {"quant_format": PTZ_TAG, "int8_tensors": sorted(quantized),
             "passthrough_tensors": sorted(passthrough)}
    return out, notes


def load_state_dict_file(path: Path, *, max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
                         ) -> IngestedCheckpoint:
    """Read a `.pt` state_dict, safetensors or `.ptz` export (detected by content) into float tensors by name."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise CheckpointError(f"{where}: no such checkpoint file")
    size_bytes = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(16)
    fmt = detect_format(head, size_bytes)
    if fmt is None:
        raise CheckpointError(f"{where}: not a recognised checkpoint (first bytes {head[:8].hex()}); accepted "
                              f"formats: {'; '.join(ACCEPTED_FORMATS)}")
    notes: dict = {"size_bytes": size_bytes}
    expected = _SUFFIX_FORMAT.get(path.suffix.lower())
    if expected is not None and expected != fmt:
        notes["suffix_mismatch"] = f"suffix {path.suffix!r} but the content is {fmt}"
    if fmt == "pt":
        with path.open("rb") as f:
            tensors = _tensor_dict(_torch_load(f, where), where, notes)
    elif fmt == "safetensors":
        try:
            tensors = load_safetensors(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{where}: malformed safetensors file ({exc})") from None
        if not tensors:
            raise CheckpointError(f"{where}: safetensors file holds no tensors")
    else:
        compressed = path.read_bytes()
        raw = _inflate(compressed, where, max_decompressed_bytes)
        tensors, ptz_notes = dequantize_int8_clean(_torch_load(io.BytesIO(raw), where + " (inflated)"), where)
        notes.update(ptz_notes)
        return IngestedCheckpoint(tensors=tensors, source_format=fmt,
                                  source_sha256=hashlib.sha256(compressed).hexdigest(), notes=notes)
    return IngestedCheckpoint(tensors=tensors, source_format=fmt, source_sha256=file_sha256(path), notes=notes)
