"""Training of the recurrent core on token arrays, in one process or data-parallel under torchrun.

AdamW with linear warmup and cosine decay (by steps, or by elapsed time under a time budget or wall-clock
cap, whichever runs out first), gradient clipping, a seed, periodic validation bits-per-byte, progress on
stderr (rank 0 only). Data parallel: every rank draws the same global batch from the same seeded generator
and keeps its rank-strided rows, gradients are averaged in one flat all-reduce, and the time budget is
agreed by an all-reduce so every rank takes the same step count; N ranks train the same model as one
process with the same global batch. On CUDA: bf16 autocast, fused AdamW, optional torch.compile. Returns
the trained model (never wrapped) and its history; saving is the caller's job (core/checkpoint.py). Must
not read environment variables (core/distributed.py reads torchrun's).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.bpb import bits_per_byte, target_byte_counts
from core.config import ModelConfig
from core.distributed import DEVICE_CHOICES, DistContext, local_context
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
    batch_tokens: int | None = None  # global tokens per optimizer step (all ranks); None: batch_size x seq_len
    max_wallclock_seconds: float | None = None  # hard cap on the loop's wall clock, with steps or alone
    device: str = "auto"  # auto (the local rank's GPU if CUDA is present, else CPU) | cpu | cuda
    compile: bool = False  # torch.compile the loss function (worth it on GPU)

    def __post_init__(self) -> None:
        if self.steps is not None and self.train_seconds is not None:
            raise ConfigError("give at most one of steps or train_seconds (max_wallclock_seconds can cap "
                              "either)")
        if self.steps is None and self.train_seconds is None and self.max_wallclock_seconds is None:
            raise ConfigError("give steps, train_seconds or max_wallclock_seconds")
        if self.max_wallclock_seconds is not None and self.max_wallclock_seconds <= 0:
            raise ConfigError(f"TrainConfig.max_wallclock_seconds={self.max_wallclock_seconds}: must be "
                              "positive")
        if self.batch_tokens is not None and self.batch_tokens <= 0:
            raise ConfigError(f"TrainConfig.batch_tokens={self.batch_tokens}: must be positive")
        if self.device not in DEVICE_CHOICES:
            raise ConfigError(f"TrainConfig.device={self.device!r}: must be one of {list(DEVICE_CHOICES)}")
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

    def global_batch_seqs(self, seq_len: int, world_size: int = 1) -> int:
        """Sequences per optimizer step over all ranks; a multiple of world_size, or ConfigError."""
        if self.batch_tokens is None:
            seqs = self.batch_size
        elif self.batch_tokens % seq_len:
            raise ConfigError(f"TrainConfig.batch_tokens={self.batch_tokens} is not a multiple of "
                              f"seq_len={seq_len}; use a multiple such as {max(1, self.batch_tokens // seq_len) * seq_len}")
        else:
            seqs = self.batch_tokens // seq_len
        if seqs % world_size:
            raise ConfigError(f"{seqs} sequences per step ({seqs * seq_len} tokens) do not split evenly over "
                              f"{world_size} ranks; use a batch that is a multiple of {world_size * seq_len} tokens")
        return seqs

    def budget_fraction(self, step: int, elapsed_seconds: float) -> float:
        """How much of the training budget is spent: the largest of the step, time and wall-clock fractions."""
        fracs = [0.0]
        if self.steps is not None:
            fracs.append(step / self.steps)
        if self.train_seconds is not None:
            fracs.append(elapsed_seconds / self.train_seconds)
        if self.max_wallclock_seconds is not None:
            fracs.append(elapsed_seconds / self.max_wallclock_seconds)
        return max(fracs)


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
