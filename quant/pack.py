"""The pack pipeline: checkpoint tensors -> per-tensor formats -> sections -> one artifact, under a budget.

This module decides formats (a fixed default plan in this version), encodes tensors through quant.formats,
picks for each section the smaller of the chosen codec and raw storage, and builds the manifest. It refuses
to return an artifact whose counted total (file + code) exceeds the budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from packer import codecs
from packer import constants as C
from packer.code_bytes import CodeCount, count_code
from packer.errors import BudgetError, ConfigError
from packer.writer import SectionSpec, build_artifact
from quant import formats

TOOL_VERSION = "0.1.0"


@dataclass(frozen=True)
class PackOptions:
    embed_format: str = "int8_row"
    matrix_format: str = "int6_row"
    control_format: str = "fp16"
    codec: str = "zstd"
    zstd_level: int = 22
    budget_bytes: int = 16_000_000

    def __post_init__(self) -> None:
        for name in ("embed_format", "matrix_format", "control_format"):
            if getattr(self, name) not in C.TENSOR_FORMATS:
                raise ConfigError(f"PackOptions.{name}={getattr(self, name)!r}: unknown format; known: "
                                  f"{sorted(C.TENSOR_FORMATS)}")
        if not 1 <= self.zstd_level <= 22:
            raise ConfigError(f"PackOptions.zstd_level={self.zstd_level}: must be 1..22")
        if self.budget_bytes <= 0:
            raise ConfigError(f"PackOptions.budget_bytes={self.budget_bytes}: must be positive")


@dataclass(frozen=True)
class PackResult:
    data: bytes
    file_bytes: int
    code: CodeCount
    total_bytes: int
    budget_bytes: int
    plan: dict[str, str]


def is_embedding(name: str) -> bool:
    return name.startswith("tok_emb")


CONTROL_TENSORS = ("pass_emb",)   # per-pass parameters: tiny, and every pass reads them


def is_control(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) < 2 or name in CONTROL_TENSORS


def default_plan(shapes: dict[str, tuple[int, ...]], opts: PackOptions) -> dict[str, str]:
    """Embedding -> embed_format; other matrices -> matrix_format; control tensors -> control_format."""
    plan = {}
    for name, shape in shapes.items():
        if is_embedding(name):
            plan[name] = opts.embed_format
        elif not is_control(name, shape):
            plan[name] = opts.matrix_format
        else:
            plan[name] = opts.control_format
    return plan


def _codec_params(opts: PackOptions) -> dict:
    return {"level": opts.zstd_level} if opts.codec == "zstd" else {}


def tensor_sections(name: str, enc: formats.Encoded, opts: PackOptions) -> tuple[dict, list[SectionSpec]]:
    """Manifest entry and sections for one encoded tensor."""
    specs, roles = [], {}
    for role in sorted(enc.arrays):
        arr = np.ascontiguousarray(enc.arrays[role])
        params = {"dtype": formats.section_dtype(arr, enc.format, role), "shape": list(arr.shape)}
        if role == "codes":
            params["bits"] = enc.bits
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        sec_name = f"{name}/{role}"
        specs.append(best_section(sec_name, raw, params, opts))
        roles[role] = sec_name
    return {"format": enc.format, "sections": roles}, specs


def best_section(name: str, raw: bytes, params: dict, opts: PackOptions) -> SectionSpec:
    """The smaller of the chosen codec and raw storage (ties go to raw: it decodes fastest)."""
    cp = dict(params, **_codec_params(opts))
    stored = codecs.encode(opts.codec, raw, cp)
    if len(stored) < len(raw):
        return SectionSpec(name, raw, opts.codec, cp)
    return SectionSpec(name, raw, "raw", dict(params))


def pack_tensors(tensors: dict[str, np.ndarray], body: dict, opts: PackOptions,
                 plan: dict[str, str] | None = None, code: CodeCount | None = None) -> PackResult:
    """Pack float tensors (name -> array) with manifest fields `body` (model, routing, tokenizer...)."""
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    plan = dict(plan or default_plan(shapes, opts))
    entries, specs = [], []
    for name in sorted(tensors):
        enc = formats.encode(tensors[name], plan[name])
        entry, secs = tensor_sections(name, enc, opts)
        entries.append({"name": name, "shape": list(shapes[name]), **entry})
        specs.extend(secs)
    full = dict(body, tensors=entries, tool={"name": "golfpack", "version": TOOL_VERSION},
                options=asdict(opts))
    data = build_artifact(full, specs)
    code = code or count_code()
    total = len(data) + code.compressed_bytes
    if total > opts.budget_bytes:
        biggest = sorted(((len(s.raw), s.name) for s in specs), reverse=True)[:3]
        raise BudgetError(f"artifact {len(data)} B + code {code.compressed_bytes} B = {total} B exceeds the "
                          f"budget {opts.budget_bytes} B by {total - opts.budget_bytes} B; largest sections "
                          f"(raw bytes): {', '.join(f'{n} {b}' for b, n in biggest)}; use lower-bit formats "
                          f"or a larger --budget-bytes")
    return PackResult(data, len(data), code, total, opts.budget_bytes, plan)


def pack_checkpoint_file(ckpt_path, out_path, opts: PackOptions) -> PackResult:
    """Load a golfpack checkpoint, pack it, write the artifact atomically (never over an input)."""
    from pathlib import Path

    from core.checkpoint import checkpoint_paths, load_checkpoint
    from packer.writer import write_artifact

    ckpt = load_checkpoint(Path(ckpt_path))
    tensors = {k: v.detach().float().numpy() for k, v in ckpt.tensors.items()}
    body = {"model": {"family": "recurrent", "config": ckpt.config.to_dict()},
            "routing": {"policy": "uniform", "passes": ckpt.config.n_passes},
            "tokenizer": {"sha256": ckpt.meta.get("tokenizer_sha256"), "vocab_size": ckpt.config.vocab_size}}
    result = pack_tensors(tensors, body, opts)
    write_artifact(Path(out_path), result.data, inputs=list(checkpoint_paths(Path(ckpt_path))))
    return result
