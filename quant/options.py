"""Pack options and the default plan: which format each tensor gets when nobody plans.

Owns `PackOptions` (recorded in every artifact's manifest as `options`: its fields and their order are part
of what makes two packs byte-identical), the tensor roles the default plan distinguishes (the embedding,
the small control tensors that stay float, every other matrix) and `default_plan`.
Must not encode, measure or write anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import ConfigError, UsageError, flag
from packer import codecs
from packer import constants as C


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
    gptq_block: int = 32              # GPTQ columns per lazy-batch block (32: 2.7x faster than 128 in numpy, same math)
    gptq_act_order: bool = True       # GPTQ in order of decreasing diag H
    dedup: bool = True                # exact duplicate tensors stored once (manifest aliases)
    extra_codecs: tuple[str, ...] = ("ans", "brotli-shuffle")   # also tried per section; the smallest wins

    def __post_init__(self) -> None:
        for name in ("embed_format", "matrix_format", "control_format"):
            if getattr(self, name) not in C.TENSOR_FORMATS:
                raise ConfigError(f"{flag(name)} {getattr(self, name)!r}: unknown format; known: "
                                  f"{sorted(C.TENSOR_FORMATS)}")
        if not 1 <= self.zstd_level <= 22:
            raise ConfigError(f"PackOptions.zstd_level={self.zstd_level}: must be 1..22")
        if self.budget_bytes <= 0:
            raise ConfigError(f"--budget-bytes {self.budget_bytes}: must be positive")
        if self.scale_method != "best" and self.scale_method not in C.SCALE_METHODS:
            raise ConfigError(f"--scale-method {self.scale_method!r}: must be 'best' or one of "
                              f"{sorted(C.SCALE_METHODS)}")
        if self.sdclip_k is not None and not self.sdclip_k > 0:
            raise ConfigError(f"PackOptions.sdclip_k={self.sdclip_k}: must be positive")
        known = codecs.names()
        bad = [c for c in (self.codec, *self.extra_codecs) if c not in known]
        if bad:
            raise ConfigError(f"--codecs: unknown codec(s) {bad}; known: {known}")
        if not 0 <= self.gptq_damp < 10 or self.gptq_block < 1:
            raise ConfigError(f"PackOptions.gptq_damp={self.gptq_damp}, gptq_block={self.gptq_block}: need "
                              f"0 <= damp < 10 and block >= 1")

    @classmethod
    def from_options(cls, codecs_csv: str, **kw) -> PackOptions:
        """From the command line: `codecs_csv` "A,B,..." gives `codec` A and `extra_codecs` (B, ...)."""
        names = [c.strip() for c in codecs_csv.split(",") if c.strip()]
        if not names:
            raise UsageError("--codecs needs at least one codec name")
        return cls(codec=names[0], extra_codecs=tuple(names[1:]), **kw)


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
