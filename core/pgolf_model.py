"""Parameter Golf's baseline GPT (openai/parameter-golf `train_gpt.py`) as a second model family.

Owns: `PGolfConfig` (frozen, validated, JSON round-trippable), `infer_pgolf_config` (architecture from a
state_dict's tensor shapes), `pgolf_state_shapes` (the exact tensor names and shapes a config implies) and
`PGolfGPT`, whose forward pass reproduces train_gpt.py's: embedding -> parameter-free RMSNorm = x0; each
block mixes the stream with x0 (`resid_mix`), then pre-norm grouped-KV attention (RMS norm on q and k, RoPE,
per-head `q_gain`) and a ReLU^p MLP, each scaled per channel; U-Net skips (the first half of the applied
layers push their outputs, the second half add `skip_weights[i] *` the popped one before running); final
RMSNorm, tied (or separate) head, logit softcap `c * tanh(z / c)`.
`layer_schedule` lists the block applied at each virtual layer (depth recurrence reuses blocks); the encoder
/ decoder split and the number of skip weights follow the schedule's length, as the records do.
Must not: read files, train, or know about artifacts; tensor names stay exactly the checkpoint's.
Shapes: B batch, T time, D model width, H heads, G kv heads, E head dim, V vocab, F MLP hidden.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import CheckpointError, ConfigError, DataError


@dataclass(frozen=True)
class PGolfConfig:
    """Architecture of a train_gpt.py baseline GPT. `layer_schedule=None` means blocks 0..num_layers-1."""

    vocab_size: int
    num_layers: int
    model_dim: int
    num_heads: int
    num_kv_heads: int
    mlp_hidden: int
    mlp_power: int = 2
    rope_base: float = 10000.0
    softcap: float = 30.0
    tie_embeddings: bool = True
    layer_schedule: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        def need(cond: bool, field: str, why: str) -> None:
            if not cond:
                raise ConfigError(f"PGolfConfig.{field}={getattr(self, field)!r}: {why}")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        for name in ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_hidden",
                     "mlp_power"):
            need(is_int(getattr(self, name)) and getattr(self, name) > 0, name, "must be a positive integer")
        for name in ("rope_base", "softcap"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v != float("inf"),
                 name, "must be a positive finite number")
        need(isinstance(self.tie_embeddings, bool), "tie_embeddings", "must be true or false")
        need(self.model_dim % self.num_heads == 0, "model_dim", f"must be divisible by num_heads={self.num_heads}")
        need(self.num_heads % self.num_kv_heads == 0, "num_kv_heads", f"must divide num_heads={self.num_heads}")
        need(self.head_dim % 2 == 0, "model_dim", f"head dim {self.head_dim} must be even for RoPE")
        if isinstance(self.layer_schedule, list):
            object.__setattr__(self, "layer_schedule", tuple(self.layer_schedule))
        if self.layer_schedule is not None:
            sched = self.layer_schedule
            need(isinstance(sched, tuple) and len(sched) > 0, "layer_schedule",
                 "must be null or a non-empty list of block indices")
            need(all(is_int(i) and 0 <= i < self.num_layers for i in sched), "layer_schedule",
                 f"every entry must be a block index in [0, {self.num_layers})")

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def schedule(self) -> tuple[int, ...]:
        """Block index applied at each virtual layer, in order."""
        return self.layer_schedule if self.layer_schedule is not None else tuple(range(self.num_layers))

    @property
    def num_encoder_layers(self) -> int:
        return len(self.schedule) // 2

    @property
    def num_skip_weights(self) -> int:
        n = len(self.schedule)
        return min(n // 2, n - n // 2)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layer_schedule"] = None if self.layer_schedule is None else list(self.layer_schedule)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> PGolfConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"pgolf model config must be a JSON object, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"pgolf model config has unknown field(s) {unknown}; known fields are {known}")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ConfigError(f"pgolf model config is missing field(s) {missing}")
        sched = data.get("layer_schedule")
        if sched is not None and not isinstance(sched, (list, tuple)):
            raise ConfigError(f"PGolfConfig.layer_schedule={sched!r}: must be null or a list of block indices")
        return cls(**{**data, "layer_schedule": None if sched is None else tuple(sched)})


def pgolf_state_shapes(cfg: PGolfConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of a PGolfGPT state_dict with its shape, in the model's order."""
    D, H, E, G, Fh = cfg.model_dim, cfg.num_heads, cfg.head_dim, cfg.num_kv_heads, cfg.mlp_hidden
    shapes: dict[str, tuple[int, ...]] = {"tok_emb.weight": (cfg.vocab_size, D),
                                          "skip_weights": (cfg.num_skip_weights, D)}
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        shapes.update({
            p + "attn_scale": (D,), p + "mlp_scale": (D,), p + "resid_mix": (2, D),
            p + "attn.q_gain": (H,),
            p + "attn.c_q.weight": (H * E, D), p + "attn.c_k.weight": (G * E, D),
            p + "attn.c_v.weight": (G * E, D), p + "attn.proj.weight": (D, H * E),
            p + "mlp.fc.weight": (Fh, D), p + "mlp.proj.weight": (D, Fh),
        })
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, D)
    return shapes


def check_state_dict(cfg: PGolfConfig, state_dict: dict) -> None:
    """CheckpointError unless `state_dict` has exactly the names and shapes `cfg` implies."""
    want = pgolf_state_shapes(cfg)
    missing = [k for k in want if k not in state_dict]
    unexpected = [k for k in state_dict if k not in want]
    if missing or unexpected:
        raise CheckpointError(
            f"state_dict does not match the Parameter Golf baseline GPT {cfg.to_dict()}: "
            f"missing keys {missing}, unexpected keys {unexpected}")
    for name, shape in want.items():
        got = tuple(state_dict[name].shape)
        if got != shape:
            raise CheckpointError(f"tensor {name!r} has shape {list(got)}, the config implies {list(shape)}")


_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def infer_pgolf_config(state_dict: dict, *, mlp_power: int = 2, rope_base: float = 10000.0,
                       softcap: float = 30.0, layer_schedule: tuple[int, ...] | None = None) -> PGolfConfig:
    """Architecture from tensor shapes; what shapes cannot tell (power, RoPE base, softcap, schedule) is given."""

    def tensor(name: str, ndim: int) -> torch.Tensor:
        t = state_dict.get(name)
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"tensor {name!r} is missing: not a Parameter Golf baseline GPT state_dict "
                                  f"(keys start {sorted(state_dict)[:6]})")
        if t.ndim != ndim:
            raise CheckpointError(f"tensor {name!r} has shape {list(t.shape)}, expected {ndim} dimensions")
        return t

    emb = tensor("tok_emb.weight", 2)
    vocab_size, model_dim = emb.shape
    block_ids = sorted({int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))})
    if not block_ids:
        raise CheckpointError("state_dict has no 'blocks.{i}.*' tensors: not a Parameter Golf baseline GPT")
    if block_ids != list(range(len(block_ids))):
        raise CheckpointError(f"block indices {block_ids} are not 0..{len(block_ids) - 1} without gaps")
    num_heads = tensor("blocks.0.attn.q_gain", 1).shape[0]
    if num_heads == 0 or model_dim % num_heads:
        raise CheckpointError(f"tensor 'blocks.0.attn.q_gain' has {num_heads} heads, "
                              f"which do not divide the width {model_dim}")
    head_dim = model_dim // num_heads
    kv_rows = tensor("blocks.0.attn.c_k.weight", 2).shape[0]
    if kv_rows == 0 or kv_rows % head_dim:
        raise CheckpointError(f"tensor 'blocks.0.attn.c_k.weight' has {kv_rows} rows, "
                              f"not a multiple of the head dim {head_dim}")
    mlp_hidden = tensor("blocks.0.mlp.fc.weight", 2).shape[0]
    skip = tensor("skip_weights", 2)
    try:
        cfg = PGolfConfig(vocab_size=vocab_size, num_layers=len(block_ids), model_dim=model_dim,
                          num_heads=num_heads, num_kv_heads=kv_rows // head_dim, mlp_hidden=mlp_hidden,
                          mlp_power=mlp_power, rope_base=rope_base, softcap=softcap,
                          tie_embeddings="lm_head.weight" not in state_dict, layer_schedule=layer_schedule)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint shapes give an invalid architecture: {exc}") from None
    if skip.shape[0] != cfg.num_skip_weights:
        raise CheckpointError(
            f"tensor 'skip_weights' has {skip.shape[0]} rows but a schedule of {len(cfg.schedule)} layers "
            f"needs {cfg.num_skip_weights}; a looped (depth-recurrent) checkpoint needs its layer_schedule")
    check_state_dict(cfg, state_dict)
    return cfg


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMS norm over the last dim with torch's default eps (finfo(dtype).eps), as train_gpt."""
    return F.rms_norm(x, (x.size(-1),))


def _rope_tables(seq_len: int, head_dim: int, base: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [1,1,T,E/2] computed in float32 exactly as train_gpt's Rotary."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos()[None, None], angles.sin()[None, None]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """train_gpt's rotation convention: (x1, x2) -> (x1 cos + x2 sin, x2 cos - x1 sin) over halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class _Attention(nn.Module):
    def __init__(self, cfg: PGolfConfig) -> None:
        super().__init__()
        D, E = cfg.model_dim, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, E
        self.c_q = nn.Linear(D, cfg.num_heads * E, bias=False)
        self.c_k = nn.Linear(D, cfg.num_kv_heads * E, bias=False)
        self.c_v = nn.Linear(D, cfg.num_kv_heads * E, bias=False)
        self.proj = nn.Linear(cfg.num_heads * E, D, bias=False)
        self.q_gain = nn.Parameter(torch.ones(cfg.num_heads))

    def forward(self, xn: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = xn.shape
        q = self.c_q(xn).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)      # [B,H,T,E]
        k = self.c_k(xn).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)   # [B,G,T,E]
        v = self.c_v(xn).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)   # [B,G,T,E]
        q = _rotate(_rms(q), cos, sin) * self.q_gain[None, :, None, None]
        k = _rotate(_rms(k), cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           enable_gqa=self.num_kv_heads != self.num_heads)   # [B,H,T,E]
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class _MLP(nn.Module):
    def __init__(self, cfg: PGolfConfig) -> None:
        super().__init__()
        self.power = cfg.mlp_power
        self.fc = nn.Linear(cfg.model_dim, cfg.mlp_hidden, bias=False)
        self.proj = nn.Linear(cfg.mlp_hidden, cfg.model_dim, bias=False)

    def forward(self, xn: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(xn))                                                      # [B,T,F]
        return self.proj(h.square() if self.power == 2 else h ** self.power)


class _Block(nn.Module):
    def __init__(self, cfg: PGolfConfig) -> None:
        super().__init__()
        D = cfg.model_dim
        self.attn = _Attention(cfg)
        self.mlp = _MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(D))
        self.mlp_scale = nn.Parameter(torch.ones(D))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(D), torch.zeros(D))))

    def forward(self, x: torch.Tensor, x0: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = self.resid_mix[0] * x + self.resid_mix[1] * x0
        x = x + self.attn_scale * self.attn(_rms(x), cos, sin)
        return x + self.mlp_scale * self.mlp(_rms(x))


class PGolfGPT(nn.Module):
    """train_gpt.py's GPT, evaluated in float32; `forward(tokens [B,T]) -> logits [B,T,V]` float32."""

    def __init__(self, cfg: PGolfConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.skip_weights = nn.Parameter(torch.ones(cfg.num_skip_weights, cfg.model_dim))
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.num_layers))
        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.model_dim, cfg.vocab_size, bias=False)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a checkpoint's tensors under their own names; strict, CheckpointError on any mismatch."""
        if not strict:
            raise CheckpointError("PGolfGPT loads state_dicts strictly; pass every tensor the config implies")
        check_state_dict(self.cfg, state_dict)
        return super().load_state_dict(state_dict, strict=True, assign=assign)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise DataError(f"tokens must be an int64/int32 tensor [B,T], got {tokens.dtype} {list(tokens.shape)}")
        T = tokens.shape[1]
        cos, sin = _rope_tables(T, self.cfg.head_dim, self.cfg.rope_base, tokens.device)
        x = _rms(self.tok_emb(tokens))                                                  # [B,T,D]
        x0 = x
        skips: list[torch.Tensor] = []
        schedule = self.cfg.schedule
        n_enc = self.cfg.num_encoder_layers
        for block_id in schedule[:n_enc]:
            x = self.blocks[block_id](x, x0, cos, sin)
            skips.append(x)
        for i, block_id in enumerate(schedule[n_enc:]):
            if skips:
                x = x + self.skip_weights[i] * skips.pop()
            x = self.blocks[block_id](x, x0, cos, sin)
        x = _rms(x)
        head = self.tok_emb.weight if self.cfg.tie_embeddings else self.lm_head.weight
        logits = F.linear(x, head)                                                      # [B,T,V]
        return (self.cfg.softcap * torch.tanh(logits / self.cfg.softcap)).float()
