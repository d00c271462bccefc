"""The pack pipeline: checkpoint tensors -> per-tensor formats -> sections -> one artifact, under a budget.

This module owns the default plan, the section layout of an encoded tensor (the smallest of the codecs
opts.codec + opts.extra_codecs and raw storage), aliases for exact duplicates (quant/tying.py), the manifest, and the budget check: it
refuses to return an artifact whose counted total (file + code) exceeds the budget. Encodings come from
quant/candidates.py (best scale method per tensor); calibration, the budget planner and explicit plans are
wired together in quant/pipeline.py, which pack_checkpoint_file calls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from packer import codecs
from packer import constants as C
from packer.code_bytes import CodeCount, count_code
from packer.errors import BudgetError, ConfigError
from packer.reader import parse_artifact
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
    scale_method: str = "best"        # "best" (least error among those that apply) or one of SCALE_METHODS
    sdclip_k: float | None = None     # SDClip's k; None: quant.primitives.SDCLIP_K for the bit width
    gptq_damp: float = 0.01           # GPTQ dampening (fraction of mean diag H)
    gptq_block: int = 128             # GPTQ columns per block
    gptq_act_order: bool = True       # GPTQ in order of decreasing diag H
    dedup: bool = True                # exact duplicate tensors stored once (manifest aliases)
    extra_codecs: tuple[str, ...] = ("ans", "brotli-shuffle")   # also tried per section; the smallest wins

    def __post_init__(self) -> None:
        for name in ("embed_format", "matrix_format", "control_format"):
            if getattr(self, name) not in C.TENSOR_FORMATS:
                raise ConfigError(f"PackOptions.{name}={getattr(self, name)!r}: unknown format; known: "
                                  f"{sorted(C.TENSOR_FORMATS)}")
        if not 1 <= self.zstd_level <= 22:
            raise ConfigError(f"PackOptions.zstd_level={self.zstd_level}: must be 1..22")
        if self.budget_bytes <= 0:
            raise ConfigError(f"PackOptions.budget_bytes={self.budget_bytes}: must be positive")
        if self.scale_method != "best" and self.scale_method not in C.SCALE_METHODS:
            raise ConfigError(f"PackOptions.scale_method={self.scale_method!r}: must be 'best' or one of "
                              f"{sorted(C.SCALE_METHODS)}")
        if self.sdclip_k is not None and not self.sdclip_k > 0:
            raise ConfigError(f"PackOptions.sdclip_k={self.sdclip_k}: must be positive")
        known = codecs.names()
        bad = [c for c in (self.codec, *self.extra_codecs) if c not in known]
        if bad:
            raise ConfigError(f"PackOptions codec(s) {bad}: unknown; known: {known}")
        if not 0 <= self.gptq_damp < 10 or self.gptq_block < 1:
            raise ConfigError(f"PackOptions.gptq_damp={self.gptq_damp}, gptq_block={self.gptq_block}: need "
                              f"0 <= damp < 10 and block >= 1")


@dataclass(frozen=True)
class PackResult:
    data: bytes
    file_bytes: int
    code: CodeCount
    total_bytes: int
    budget_bytes: int
    plan: dict[str, str]
    scales: dict[str, str] = field(default_factory=dict)       # tensor -> scale method (integer formats)
    aliases: dict[str, str] = field(default_factory=dict)      # alias -> stored tensor
    encoded: dict = field(default_factory=dict, repr=False)    # tensor -> quant.formats.Encoded
    report: dict = field(default_factory=dict)                 # calibration / planner facts, JSON-able


def is_embedding(name: str) -> bool:
    return name.startswith("tok_emb")


CONTROL_TENSORS = ("pass_emb",)   # per-pass parameters: tiny, and every pass reads them
# Parameter Golf's control tensors (train_gpt.py CONTROL_TENSOR_NAME_PATTERNS): 2-D ones too (resid_mix,
# skip_weights) scale whole residual streams and are tiny, so they stay float.
CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")


def is_control(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) < 2 or name in CONTROL_TENSORS or any(p in name for p in CONTROL_PATTERNS)


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


def _codec_params(opts: PackOptions, codec: str | None = None) -> dict:
    return {"level": opts.zstd_level} if (codec or opts.codec) == "zstd" else {}


def tensor_sections(name: str, enc: formats.Encoded, opts: PackOptions,
                    prefix: str | None = None) -> tuple[dict, list[SectionSpec]]:
    """Manifest entry and sections (named `<prefix>/<role>`, prefix default: the tensor's name)."""
    entry, specs, _ = sized_tensor_sections(name, enc, opts, prefix)
    return entry, specs


def sized_tensor_sections(name: str, enc: formats.Encoded, opts: PackOptions,
                          prefix: str | None = None) -> tuple[dict, list[SectionSpec], int]:
    """tensor_sections plus the payload bytes its sections will occupy (exactly what the writer stores)."""
    specs, roles, stored_bytes = [], {}, 0
    for role in sorted(enc.arrays):
        arr = np.ascontiguousarray(enc.arrays[role])
        params = {"dtype": formats.section_dtype(arr, enc.format, role), "shape": list(arr.shape)}
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


def best_section(name: str, raw: bytes, params: dict, opts: PackOptions) -> SectionSpec:
    """The smallest of the codecs (opts.codec, opts.extra_codecs) and raw storage (raw wins ties)."""
    return sized_section(name, raw, params, opts)[0]


def sized_section(name: str, raw: bytes, params: dict, opts: PackOptions) -> tuple[SectionSpec, int]:
    """best_section and the number of bytes it stores: the smallest of opts.codec, opts.extra_codecs (in that
    order on ties) and raw storage (which wins ties)."""
    best = (SectionSpec(name, raw, "raw", dict(params)), len(raw))
    for codec in dict.fromkeys((opts.codec, *opts.extra_codecs)):
        cp = dict(params, **_codec_params(opts, codec))
        n = len(codecs.encode(codec, raw, cp))
        if n < best[1]:
            best = (SectionSpec(name, raw, codec, cp), n)
    return best


def pack_tensors(tensors: dict[str, np.ndarray], body: dict, opts: PackOptions,
                 plan: dict[str, str] | None = None, code: CodeCount | None = None, *,
                 encoded: dict[str, formats.Encoded] | None = None, aliases: dict[str, str] | None = None,
                 hessians: dict | None = None, check_budget: bool = True) -> PackResult:
    """Pack float tensors (name -> array) with manifest fields `body` (model, routing, tokenizer...).

    `encoded` gives ready encodings (e.g. the planner's) for some tensors; the others are encoded in their
    plan format with the best scale method (GPTQ where `hessians` has the tensor's input Hessian).
    `aliases` (alias -> stored name) default to the exact duplicates when opts.dedup. check_budget=False
    returns an over-budget result instead of raising (the planner's trial packs).
    """
    from quant.candidates import best_candidate
    from quant.tying import find_duplicates

    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    plan = {**default_plan(shapes, opts), **(plan or {})}
    if aliases is None:
        aliases = find_duplicates(tensors, is_embedding) if opts.dedup else {}
    encoded = dict(encoded or {})
    entries, specs = [], []
    for index, name in enumerate(sorted(tensors)):
        if name in aliases:
            entries.append({"name": name, "shape": list(shapes[name]), "alias_of": aliases[name]})
            plan[name] = plan[aliases[name]]
            continue
        enc = encoded.get(name)
        if enc is None or enc.format != plan[name]:
            enc = best_candidate(name, tensors[name], plan[name], (hessians or {}).get(name), opts).enc
        encoded[name] = enc
        # sections are named by the tensor's index: the manifest names each tensor once (its table entry
        # maps roles to sections), and on a small model the repeated long names cost over 1% of the file
        entry, secs = tensor_sections(name, enc, opts, prefix=str(index))
        entries.append({"name": name, "shape": list(shapes[name]), **entry})
        specs.extend(secs)
    full = dict(body, tensors=entries, tool={"name": "golfpack", "version": TOOL_VERSION},
                options=asdict(opts))
    data = build_artifact(full, specs)
    code = code or count_code()
    total = len(data) + code.compressed_bytes
    if check_budget and total > opts.budget_bytes:
        stored = {s.name: s.stored_bytes for s in parse_artifact(data).sections}
        per_tensor = {e["name"]: sum(stored[sec] for sec in e["sections"].values()) for e in entries
                      if "sections" in e}
        biggest = sorted(((b, n) for n, b in per_tensor.items()), reverse=True)[:3]
        raise BudgetError(f"artifact {len(data)} B + code {code.compressed_bytes} B = {total} B exceeds the "
                          f"budget {opts.budget_bytes} B by {total - opts.budget_bytes} B; largest tensors "
                          f"(stored bytes): {', '.join(f'{n} {b} B' for b, n in biggest)}; use lower-bit "
                          f"formats or a larger --budget-bytes")
    return PackResult(data, len(data), code, total, opts.budget_bytes, plan,
                      {n: e.scale for n, e in encoded.items() if e.scale is not None}, dict(aliases), encoded)


def checkpoint_body(ckpt) -> dict:
    """Manifest members (model, uniform routing, tokenizer) for a recurrent golfpack checkpoint."""
    return {"model": {"family": "recurrent", "config": ckpt.config.to_dict()},
            "routing": {"policy": "uniform", "passes": ckpt.config.n_passes},
            "tokenizer": {"sha256": ckpt.meta.get("tokenizer_sha256"), "vocab_size": ckpt.config.vocab_size}}


def pack_checkpoint_file(ckpt_path, out_path, opts: PackOptions, route=None, *, calib=None, plan=None,
                         fill: bool = False, planner=None, progress: bool = True) -> PackResult:
    """Load a golfpack checkpoint, pack it, write the artifact atomically (never over an input).

    `route`: None keeps uniform depth; else a function artifact bytes -> manifest `routing` object, called on
    the packed artifact (the model as it will run: dequantized), whose rule is then packed with the same
    tensors (verify.adaptive.routing_calibrator builds one).
    Calibration (GPTQ's Hessians, the planner's sensitivities) reads TRAINING shards only: those of
    `calib.data` (quant.calibrate.CalibConfig), by default the checkpoint's own folder when it holds
    `*_train_*.bin` shards, and of those only the tail the checkpoint says training held out, if any;
    without any, scales come from data-free methods (said on stderr) and the planner is unavailable. `plan`: explicit name -> (format, scale method or None) for some tensors (the rest
    default); `fill`: the planner fills opts.budget_bytes; `planner`: quant.planner.PlannerConfig."""
    from pathlib import Path

    from core.checkpoint import checkpoint_paths, load_checkpoint
    from core.model import RecurrentLM
    from packer.atomic import refuse_same_path
    from packer.writer import write_artifact
    from quant.calibrate import CalibConfig, calibration_sets, checkpoint_holdout, default_calib_data
    from quant.pipeline import log, pack_model

    inputs = [Path(ckpt_path), *checkpoint_paths(Path(ckpt_path))]
    refuse_same_path(Path(out_path), inputs)          # before any work: the output must not be an input
    ckpt = load_checkpoint(Path(ckpt_path))
    tensors = {k: v.detach().float().numpy() for k, v in ckpt.tensors.items()}
    body = checkpoint_body(ckpt)
    calib = calib or CalibConfig()
    data = calib.data if calib.data is not None else default_calib_data(Path(ckpt_path))
    windows = joint = None
    if data is not None:
        windows, joint = calibration_sets(Path(data), calib, ckpt.config.seq_len, ckpt.config.vocab_size, progress,
                                          holdout=checkpoint_holdout(ckpt.meta))
    else:
        log("pack: no calibration data (no *_train_*.bin shards beside the checkpoint; pass --calib-data): "
            "scales by data-free clip choice, no GPTQ, no planner", progress)
    model = RecurrentLM(ckpt.config)
    model.load_state_dict(ckpt.tensors, strict=True)
    result = pack_model(model, tensors, body, opts, windows=windows, joint_windows=joint, plan=plan, fill=fill,
                        planner=planner, route=route, progress=progress, batch_size=calib.batch_size)
    write_artifact(Path(out_path), result.data, inputs=inputs)
    return result
