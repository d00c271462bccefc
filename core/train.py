"""Single-process training of the recurrent core on token arrays.

AdamW with linear warmup and cosine decay (by steps, or by elapsed time under a time budget), gradient
clipping, a seed, periodic validation bits-per-byte, progress on stderr. Returns the trained model and its
history; saving is the caller's job (core/checkpoint.py). Must not read environment variables.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.bpb import bits_per_byte, target_byte_counts
from core.config import ModelConfig
from core.model import RecurrentLM
from core.progress import Progress
from core.scoring import score_stream
from packer.errors import ConfigError, DataError


@dataclass(frozen=True)
class TrainConfig:
    steps: int | None = None
    train_seconds: float | None = None
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 100
    eval_tokens: int = 32_768
    threads: int | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.train_seconds is None):
            raise ConfigError("give exactly one of steps or train_seconds")
        if self.steps is not None and self.steps <= 0:
            raise ConfigError(f"TrainConfig.steps={self.steps}: must be positive")
        if self.train_seconds is not None and self.train_seconds <= 0:
            raise ConfigError(f"TrainConfig.train_seconds={self.train_seconds}: must be positive")
        for name in ("batch_size", "eval_every", "eval_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)}: must be positive")
        if not (self.lr > 0 and 0 <= self.min_lr_frac <= 1 and self.grad_clip > 0 and self.warmup_steps >= 0):
            raise ConfigError("TrainConfig: lr and grad_clip must be positive, min_lr_frac in [0, 1], "
                              "warmup_steps >= 0")


@dataclass
class TrainResult:
    model: RecurrentLM
    steps: int
    seconds: float
    tokens_seen: int
    history: list[dict] = field(default_factory=list)


def sample_batch(tokens: np.ndarray, batch: int, seq_len: int, gen: np.random.Generator):
    """Random windows: inputs [B,T] and next-token targets [B,T] (int64)."""
    if len(tokens) < seq_len + 2:
        raise DataError(f"only {len(tokens)} training tokens; need more than seq_len+1={seq_len + 1}")
    starts = gen.integers(0, len(tokens) - seq_len - 1, size=batch)
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    win = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    return win[:, :-1], win[:, 1:]


def quick_val_bpb(model: RecurrentLM, val_tokens: np.ndarray, tables, max_tokens: int) -> tuple[float, float]:
    """(loss nats/token, bpb) on the first `max_tokens` validation targets (all of them if fewer)."""
    toks = np.asarray(val_tokens[: max_tokens + 1])
    was = model.training
    model.eval()
    nats = score_stream(model, toks, model.cfg.seq_len)
    model.train(was)
    nbytes = int(target_byte_counts(toks[:-1], toks[1:], tables).sum())
    return float(nats.mean()), bits_per_byte(float(nats.sum()), nbytes)


def lr_at(cfg: TrainConfig, step: int, frac_done: float) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cos = 0.5 * (1 + math.cos(math.pi * min(frac_done, 1.0)))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * cos)


def train(model_cfg: ModelConfig, cfg: TrainConfig, train_tokens: np.ndarray, val_tokens: np.ndarray,
          tables, progress: bool = True) -> TrainResult:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = np.random.default_rng(cfg.seed)
    model = RecurrentLM(model_cfg)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    budget = cfg.steps if cfg.steps is not None else cfg.train_seconds
    bar = Progress("train", budget, enabled=progress)
    history: list[dict] = []
    start = time.perf_counter()
    step, loss_ema = 0, None
    model.train()
    while True:
        elapsed = time.perf_counter() - start
        frac = step / cfg.steps if cfg.steps is not None else elapsed / cfg.train_seconds
        if frac >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step, frac)
        x, y = sample_batch(train_tokens, cfg.batch_size, model_cfg.seq_len, gen)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
        row = {"step": step, "seconds": time.perf_counter() - start, "train_loss": loss.item()}
        if step % cfg.eval_every == 0:
            row["val_loss"], row["val_bpb"] = quick_val_bpb(model, val_tokens, tables, cfg.eval_tokens)
            bar.log(f"step {step}: train loss {loss_ema:.4f}, val loss {row['val_loss']:.4f}, "
                    f"val bpb {row['val_bpb']:.4f}")
        history.append(row)
        bar.update(step if cfg.steps is not None else row["seconds"], step=step, loss=loss_ema)
    seconds = time.perf_counter() - start
    bar.update(budget, step=step, loss=loss_ema if loss_ema is not None else float("nan"))
    model.eval()
    return TrainResult(model, step, seconds, step * cfg.batch_size * model_cfg.seq_len, history)
