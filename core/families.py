"""The registry of model families: a family name (as checkpoints and artifacts record it) -> config, model, hooks.

`recurrent` is golfpack's recurrent core (core/model.py); `pgolf` is Parameter Golf's baseline GPT
(core/pgolf_model.py). Both configs are frozen dataclasses with `to_dict` / `from_dict`; both models take a
state_dict under the checkpoint's own tensor names and map tokens [B,T] to logits [B,T,V]. What differs per
family is a hook here, never a branch in a caller: the routing a packed model runs without a rule
(`uniform_routing`), whether it can carry a routing rule at all (`can_route`), and its evaluation and
calibration context (`context`).
Must not read files or know about artifacts, checkpoints or quantization.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from common.errors import CheckpointError, ConfigError
from core.config import ModelConfig
from core.model import RecurrentLM
from core.pgolf_model import PGolfConfig, PGolfGPT

PGOLF_DEFAULT_SEQ_LEN = 1024    # train_gpt.py's default TRAIN_SEQ_LEN (its validation uses the same length)


def _check_seq_len(seq_len) -> None:
    if seq_len is not None and (not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1):
        raise ConfigError(f"evaluation seq_len {seq_len!r} must be a positive integer")


@dataclass(frozen=True)
class Family:
    """A model family: its config and model classes and the hooks callers use instead of branching."""

    name: str
    config_class: type
    model_class: type
    can_route: bool = False        # whether an artifact of it may carry an adaptive routing rule

    def uniform_routing(self, cfg) -> dict:
        """The manifest `routing` of a model that runs every position the same way."""
        return {"policy": "uniform"}

    def context(self, cfg, seq_len: int | None = None) -> int:
        """Evaluation (and calibration) context length: `seq_len` if given, else the family's default."""
        _check_seq_len(seq_len)
        return PGOLF_DEFAULT_SEQ_LEN if seq_len is None else seq_len


@dataclass(frozen=True)
class RecurrentFamily(Family):
    """golfpack's recurrent core: K passes of shared blocks, a routing rule may add one; context its own."""

    def uniform_routing(self, cfg) -> dict:
        return {"policy": "uniform", "passes": cfg.n_passes}

    def context(self, cfg, seq_len: int | None = None) -> int:
        _check_seq_len(seq_len)
        if seq_len is not None and seq_len > cfg.seq_len:
            raise ConfigError(f"the recurrent core's context is {cfg.seq_len} tokens; seq_len {seq_len} is longer")
        return cfg.seq_len if seq_len is None else seq_len


FAMILIES: dict[str, Family] = {
    "recurrent": RecurrentFamily("recurrent", ModelConfig, RecurrentLM, can_route=True),
    "pgolf": Family("pgolf", PGolfConfig, PGolfGPT),
}


def family(name: str) -> Family:
    """The registered family, or ConfigError naming the known ones."""
    found = FAMILIES.get(name) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(f"model family {name!r} is not known; this golfpack knows {sorted(FAMILIES)}")
    return found


def config_from_dict(name: str, data: dict):
    """The family's config from its JSON form (ConfigError on an unknown family or invalid config)."""
    return family(name).config_class.from_dict(data)


def check_state(model: nn.Module, state_dict: dict, where: str) -> None:
    """CheckpointError unless `state_dict` has exactly the model's tensor names and shapes: the missing and
    unexpected names and the first shape mismatches are listed (never torch's multi-line load error)."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(getattr(v, "shape", ())) for k, v in state_dict.items()}
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    shapes = [f"{k} is {list(got[k])}, the config implies {list(want[k])}" for k in sorted(want)
              if k in got and got[k] != want[k]]
    if missing or unexpected or shapes:
        parts = ([f"missing {len(missing)} tensor(s) {missing[:5]}"] if missing else []) + \
                ([f"unexpected {len(unexpected)} tensor(s) {unexpected[:5]}"] if unexpected else []) + \
                ([f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:3])}"] if shapes else [])
        raise CheckpointError(f"{where}: the tensors do not match the model its config describes: "
                              f"{', '.join(parts)}; the checkpoint and its config do not belong together")


def build_model(name: str, cfg, state_dict: dict, where: str = "checkpoint", share: bool = False) -> nn.Module:
    """A model of the family with `state_dict` loaded strictly (checked first: CheckpointError), in eval mode;
    with `share` its parameters are the given tensors themselves (no copy: one model's weights in memory, not
    two; whoever changes a parameter then changes the tensor, and must restore it)."""
    model = family(name).model_class(cfg)
    check_state(model, state_dict, where)
    model.load_state_dict(state_dict, strict=True, assign=share)
    return model.eval()


def eval_context(name: str, cfg, seq_len: int | None = None) -> int:
    """Evaluation context length: a recurrent core's own (or shorter), any for pgolf (default 1024)."""
    return family(name).context(cfg, seq_len)
