"""Configuration of the recurrent core: one frozen, validated dataclass, JSON round-trippable.

Owns the architecture hyper-parameters only; training options live in core/train.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from common.errors import ConfigError, flag


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only recurrent core: `n_blocks` distinct blocks applied over `n_passes` passes.

    n_blocks == 1 is the recurrent core (one shared block applied K = n_passes times); n_blocks == n_passes
    is the ordinary static transformer. Pass i uses block i % n_blocks. `extra_passes` is how many passes
    beyond K the model has per-pass parameters for (the routing rule's bounded extra pass).
    """

    vocab_size: int = 1024
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int = 2
    mlp_mult: int = 2
    n_passes: int = 3
    n_blocks: int = 1
    extra_passes: int = 1
    seq_len: int = 128
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    embed_init_std: float = 0.02

    def __post_init__(self) -> None:
        def need(cond: bool, field: str, why: str) -> None:
            if not cond:
                raise ConfigError(f"{flag(field)} {getattr(self, field)!r}: {why}")

        for name in ("vocab_size", "d_model", "n_heads", "n_kv_heads", "mlp_mult", "n_passes", "n_blocks",
                     "seq_len"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0, name,
                 "must be a positive integer")
        need(isinstance(self.extra_passes, int) and self.extra_passes >= 0, "extra_passes",
             "must be a non-negative integer")
        need(self.d_model % self.n_heads == 0, "d_model", f"must be divisible by n_heads={self.n_heads}")
        need(self.n_heads % self.n_kv_heads == 0, "n_kv_heads", f"must divide n_heads={self.n_heads}")
        need((self.d_model // self.n_heads) % 2 == 0, "d_model", "head dimension must be even for RoPE")
        need(self.n_blocks <= self.n_passes, "n_blocks", f"cannot exceed n_passes={self.n_passes}")
        need(self.rope_base > 0, "rope_base", "must be positive")
        need(0 < self.norm_eps < 1, "norm_eps", "must be in (0, 1)")
        need(self.embed_init_std > 0, "embed_init_std", "must be positive")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def mlp_hidden(self) -> int:
        return self.mlp_mult * self.d_model

    @property
    def max_passes(self) -> int:
        return self.n_passes + self.extra_passes

    def block_for_pass(self, i: int) -> int:
        return i % self.n_blocks

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"model config has unknown fields {unknown}; known fields are {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"model config is invalid: {exc}") from None
