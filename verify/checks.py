"""Warnings where a verify number would mislead, and the cheap checks that must pass before any evaluation.

Owns: that every input path exists; that each reference is what the comparison assumes (the checkpoint the
artifact was packed from — the manifest records its source's hash — and of the same family and config); the
assumed Parameter Golf hyperparameters that tensor shapes cannot tell (MLP power, RoPE base, softcap), printed
with the result, and the MLP power detected by scoring the first window under each candidate; and a mean loss
above ln(vocabulary), which no trained model reaches on data of its own tokenizer. Must not evaluate the full
data (verify/job.py does) or change any number it warns about.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import UsageError
from core.pgolf_model import PGolfGPT
from core.sources import PGOLF_DEFAULTS, PGolfOptions, is_golfpack_checkpoint
from verify.targets import EvalTarget

MLP_POWERS = (1, 2, 3, 4)
POWER_MARGIN_NATS = 0.05      # another power must beat the assumed one by this much on the first window to warn


def check_inputs_exist(paths: dict[str, list[Path]]) -> None:
    """UsageError naming the option and the first path that does not exist (before anything is read); a
    golfpack checkpoint may be named by its stem."""
    for option, items in paths.items():
        for p in items:
            if not Path(p).exists() and not is_golfpack_checkpoint(Path(p)):
                raise UsageError(f"{option} {p}: no such file or folder")


def reference_warnings(target: EvalTarget, ref: EvalTarget) -> list[str]:
    """Why a reference's gap may not mean what it seems: another family or config, or not the packed source."""
    out = []
    if ref.family != target.family or ref.config != target.config:
        out.append(f"reference {ref.path} is a different model ({ref.family}, {_shape(ref)}) from {target.path} "
                   f"({target.family}, {_shape(target)}): the gap compares two different models")
    source = (target.info.get("source") or {}).get("sha256")
    ref_sha = (ref.info.get("source") or {}).get("sha256") if ref.kind == "artifact" else ref.info.get("sha256")
    if source and ref_sha and ref_sha != source:
        out.append(f"reference {ref.path} (sha256 {ref_sha[:12]}…) is not the checkpoint {target.path} was packed "
                   f"from (its manifest records source sha256 {source[:12]}…)")
    return out


def _shape(t: EvalTarget) -> str:
    c = t.config
    if t.family == "pgolf":
        return f"{c.num_layers} layers x d={c.model_dim}, vocabulary {c.vocab_size}"
    return f"{c.n_blocks} block(s) x {c.n_passes} passes, d={c.d_model}, vocabulary {c.vocab_size}"


def loss_warning(val_loss: float, vocab_size: int) -> list[str]:
    """A mean loss above ln(V) is worse than uniform guessing: the data was almost surely tokenized otherwise."""
    if val_loss > math.log(vocab_size):
        return [(f"mean loss {val_loss:.4f} nats is above ln({vocab_size}) = {math.log(vocab_size):.4f}, worse than "
                f"guessing uniformly: the data was probably tokenized with another tokenizer than the model's (or the "
                 f"model is untrained)")]
    return []


def pgolf_assumptions(target: EvalTarget, given: PGolfOptions, tokens: np.ndarray, context: int
                      ) -> tuple[dict | None, list[str]]:
    """For a Parameter Golf model read from a foreign checkpoint: the hyperparameters shapes cannot tell, whether
    each was given or assumed, and a warning when another MLP power scores the first window far better."""
    if target.family != "pgolf" or target.kind != "foreign":
        return None, []
    cfg = target.config
    values = {k: {"value": getattr(cfg, k), "given": k in given.given(), "default": PGOLF_DEFAULTS[k]}
              for k in PGOLF_DEFAULTS}
    if values["mlp_power"]["given"] or len(tokens) < 2:
        return values, []
    x = torch.from_numpy(np.asarray(tokens[: min(context, len(tokens) - 1) + 1], dtype=np.int64))[None]
    losses = {p: _first_window_loss(target.model, x, p) for p in MLP_POWERS}
    values["mlp_power"]["first_window_loss_nats"] = {str(p): round(v, 5) for p, v in losses.items()}
    best = min(losses, key=losses.get)
    if best != cfg.mlp_power and losses[cfg.mlp_power] - losses[best] > POWER_MARGIN_NATS:
        return values, [(f"{target.path}: the MLP power is not recorded and was assumed {cfg.mlp_power}; relu^{best} "
                        f"scores the first window {losses[best]:.4f} nats against {losses[cfg.mlp_power]:.4f}: "
                        f"rerun with --mlp-power {best}")]
    return values, []


@torch.no_grad()
def _first_window_loss(model: PGolfGPT, x: torch.Tensor, power: int) -> float:
    saved = [b.mlp.power for b in model.blocks]
    try:
        for b in model.blocks:
            b.mlp.power = power
        logits = model(x[:, :-1])
        return float(F.cross_entropy(logits[0].float(), x[0, 1:]))
    finally:
        for b, p in zip(model.blocks, saved):
            b.mlp.power = p
