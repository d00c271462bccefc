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

from common.errors import ConfigError, DataError, flag
from common.progress import Progress
from core.bpb import bits_per_byte, target_byte_counts
from core.config import ModelConfig
from core.distributed import DEVICE_CHOICES, DistContext, local_context
from core.model import RecurrentLM
from core.scoring import score_stream

ROUTE_HOLDOUT_TOKENS = 65_537   # = the routing calibration's default 65,536 tokens, plus the shifted target


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
    batch_tokens: int | None = None  # tokens per optimizer step over all ranks; None: batch_size x seq_len
    max_wallclock_seconds: float | None = None  # hard cap on the loop's wall clock, with steps or alone
    device: str = "auto"  # auto (the local rank's GPU if CUDA is present, else CPU) | cpu | cuda
    compile: bool = False  # torch.compile the loss function (worth it on GPU)
    two_exit: bool = False  # loss = mean of the K-exit and K+1-exit losses, so both routing exits are good
    holdout_tokens: int = ROUTE_HOLDOUT_TOKENS  # the training stream's tail, never trained on (see holdout_split)

    def __post_init__(self) -> None:
        if self.steps is not None and self.train_seconds is not None:
            raise ConfigError("give at most one of steps or train_seconds (max_wallclock_seconds can cap "
                              "either)")
        if self.steps is None and self.train_seconds is None and self.max_wallclock_seconds is None:
            raise ConfigError("give steps, train_seconds or max_wallclock_seconds")
        if self.max_wallclock_seconds is not None and self.max_wallclock_seconds <= 0:
            raise ConfigError(f"--max-wallclock-seconds {self.max_wallclock_seconds}: must be "
                              "positive")
        if not isinstance(self.holdout_tokens, int) or self.holdout_tokens < 0:
            raise ConfigError(f"--holdout-tokens {self.holdout_tokens!r}: must be an integer >= 0")
        if self.batch_tokens is not None and self.batch_tokens <= 0:
            raise ConfigError(f"--batch-tokens {self.batch_tokens}: must be positive")
        if self.device not in DEVICE_CHOICES:
            raise ConfigError(f"--device {self.device!r}: must be one of {list(DEVICE_CHOICES)}")
        if self.steps is not None and self.steps <= 0:
            raise ConfigError(f"--steps {self.steps}: must be positive")
        if self.train_seconds is not None and self.train_seconds <= 0:
            raise ConfigError(f"--train-seconds {self.train_seconds}: must be positive")
        for name in ("batch_size", "eval_every", "eval_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{flag(name)} {getattr(self, name)}: must be positive")
        if not (self.lr > 0 and 0 <= self.min_lr_frac <= 1 and self.grad_clip > 0 and self.warmup_steps >= 0):
            raise ConfigError("TrainConfig: lr and grad_clip must be positive, min_lr_frac in [0, 1], "
                              "warmup_steps >= 0")

    def global_batch_seqs(self, seq_len: int, world_size: int = 1) -> int:
        """Sequences per optimizer step over all ranks; a multiple of world_size, or ConfigError."""
        if self.batch_tokens is None:
            seqs = self.batch_size
        elif self.batch_tokens % seq_len:
            near = max(1, self.batch_tokens // seq_len) * seq_len
            raise ConfigError(f"--batch-tokens {self.batch_tokens} is not a multiple of "
                              f"seq_len={seq_len}; use a multiple such as {near}")
        else:
            seqs = self.batch_tokens // seq_len
        if seqs % world_size:
            raise ConfigError(f"{seqs} sequences per step ({seqs * seq_len} tokens) do not split evenly "
                              f"over {world_size} ranks; use a batch that is a multiple of "
                              f"{world_size * seq_len} tokens")
        return seqs

    def budget_fraction(self, step: int, elapsed_seconds: float) -> float:
        """How much of the budget is spent: the largest of the step, time and wall-clock fractions."""
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
    world_size: int = 1
    device: str = "cpu"


def holdout_split(train_tokens: np.ndarray, holdout: int, seq_len: int) -> np.ndarray:
    """The part of the training stream that training samples from: all but its last `holdout` tokens.

    `pack` calibrates the routing rule on the tail of the training shards (its --route-calib-tokens + 1,
    by default exactly this hold-out), and the quantization on this hold-out (the checkpoint records it),
    so both are set on tokens the model never trained on."""
    if holdout == 0:
        return train_tokens
    if len(train_tokens) - holdout < max(2 * holdout, seq_len + 2):
        raise ConfigError(f"training stream of {len(train_tokens)} tokens is too short to hold out the last "
                          f"{holdout} for routing calibration (at least twice as many must remain to train "
                          f"on); lower --holdout-tokens (0 holds none out)")
    return train_tokens[: len(train_tokens) - holdout]


def sample_batch(tokens: np.ndarray, batch: int, seq_len: int, gen: np.random.Generator, rank: int = 0,
                 world_size: int = 1):
    """Random windows of the global batch: inputs [B/W,T] and next-token targets [B/W,T] (int64).

    Every rank draws the same `batch` window starts from `gen` (seeded alike on all ranks) and keeps rows
    rank, rank + W, ...: the ranks' rows are disjoint and together are exactly the 1-process batch."""
    if len(tokens) < seq_len + 2:
        raise DataError(f"only {len(tokens)} training tokens; need more than seq_len+1={seq_len + 1}")
    starts = gen.integers(0, len(tokens) - seq_len - 1, size=batch)[rank::world_size]
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    win = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    return win[:, :-1].contiguous(), win[:, 1:].contiguous()  # contiguous: one compiled graph


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; nothing on CPU (the CPU path stays plain float32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def quick_val_bpb(model: RecurrentLM, val_tokens: np.ndarray, tables, max_tokens: int,
                  ctx: DistContext | None = None) -> tuple[float, float]:
    """(loss nats/token, bpb) on the first `max_tokens` validation targets (all of them if fewer).

    With a distributed `ctx` each rank scores a contiguous run of the same windows and the sums are
    all-reduced, so every rank returns the same numbers (equal to one process's up to summation order)."""
    toks = np.asarray(val_tokens[: max_tokens + 1])
    L = model.cfg.seq_len
    n_win = -(-(len(toks) - 1) // L)
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    lo, hi = rank * n_win // world * L, min((rank + 1) * n_win // world * L, len(toks) - 1)
    device = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64)  # nats, targets, bytes of this rank's windows
    if hi > lo:
        part = toks[lo: hi + 1]
        was = model.training
        model.eval()
        with autocast_for(device):
            nats = score_stream(lambda x: model(x.to(device)).float().cpu(), part, L)
        model.train(was)
        nbytes = int(target_byte_counts(part[:-1], part[1:], tables).sum())
        sums[:] = torch.tensor([float(nats.sum()), float(len(nats)), float(nbytes)], dtype=torch.float64)
    if ctx is not None and ctx.distributed:
        sums = ctx.all_reduce_(sums.to(ctx.device)).cpu()
    if sums[1] == 0:
        raise DataError(f"validation split has {len(toks)} tokens; need at least 2 to score")
    return float(sums[0] / sums[1]), bits_per_byte(float(sums[0]), int(sums[2]))


def compute_loss(model: RecurrentLM, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The training objective for one (local) batch: mean next-token cross-entropy (nats), a scalar.

    With `cfg.two_exit`: the mean of the cross-entropies after pass K and after pass K+1 (the routing
    rule's two exits), from one forward: pass K+1 continues from the pass-K states."""
    if not cfg.two_exit:
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
    if model.cfg.extra_passes < 1:
        raise ConfigError("--two-exit needs a model with extra_passes >= 1 (parameters for pass K+1)")
    ex = model.forward_exits(x)
    logits1 = model.extra_pass(ex.h_k)
    y = y.reshape(-1)
    return 0.5 * (F.cross_entropy(ex.logits.reshape(-1, ex.logits.shape[-1]).float(), y)
                  + F.cross_entropy(logits1.reshape(-1, logits1.shape[-1]).float(), y))


def lr_at(cfg: TrainConfig, step: int, frac_done: float) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cos = 0.5 * (1 + math.cos(math.pi * min(frac_done, 1.0)))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * cos)


def make_optimizer(model: RecurrentLM, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, weight decay on matrices only; the fused CUDA kernel on GPU, torch's default on CPU."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    fast = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.95), **fast)


def train(model_cfg: ModelConfig, cfg: TrainConfig, train_tokens: np.ndarray, val_tokens: np.ndarray,
          tables, progress: bool = True, ctx: DistContext | None = None) -> TrainResult:
    """Train from scratch. `ctx` (core/distributed.py) says the rank and device; None = one local process."""
    ctx = ctx if ctx is not None else local_context(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L = model_cfg.seq_len
    train_tokens = holdout_split(train_tokens, cfg.holdout_tokens, L)
    global_seqs = cfg.global_batch_seqs(L, ctx.world_size)
    torch.manual_seed(cfg.seed)
    gen = np.random.default_rng(cfg.seed)
    model = RecurrentLM(model_cfg).to(ctx.device)
    params = list(model.parameters())
    ctx.broadcast_(params)  # every rank starts from rank 0's weights, whatever the initialisation did
    opt = make_optimizer(model, cfg, ctx.device)
    loss_fn = torch.compile(compute_loss) if cfg.compile else compute_loss
    timed = cfg.train_seconds is not None or cfg.max_wallclock_seconds is not None
    bar = Progress("train", 1.0, enabled=progress and ctx.is_main)
    history: list[dict] = []
    model.train()
    if cfg.compile:  # compile before the clock starts; no optimizer step, so the weights are untouched
        x0, y0 = (torch.zeros(global_seqs // ctx.world_size, L, dtype=torch.long, device=ctx.device)
                  for _ in range(2))  # two tensors, as in training (aliasing would compile another graph)
        with autocast_for(ctx.device):
            loss_fn(model, x0, y0, cfg).backward()
        opt.zero_grad(set_to_none=True)
    start = time.perf_counter()
    step, loss_ema = 0, None
    while True:
        elapsed = time.perf_counter() - start
        if timed:  # every rank takes the same stop decision and the same learning rate
            elapsed = ctx.agree_max(elapsed)
        frac = cfg.budget_fraction(step, elapsed)
        if frac >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step, frac)
        x, y = sample_batch(train_tokens, global_seqs, L, gen, ctx.rank, ctx.world_size)
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        with autocast_for(ctx.device):
            loss = loss_fn(model, x, y, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        loss_now = loss.detach().float().reshape(1)
        if ctx.distributed:  # one flat all-reduce: mean gradients and the mean loss of the global batch
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            ctx.average_([p.grad for p in params] + [loss_now])
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step += 1
        loss_val = loss_now.item()
        loss_ema = loss_val if loss_ema is None else 0.95 * loss_ema + 0.05 * loss_val
        row = {"step": step, "seconds": time.perf_counter() - start, "train_loss": loss_val}
        if step % cfg.eval_every == 0:
            row["val_loss"], row["val_bpb"] = quick_val_bpb(model, val_tokens, tables, cfg.eval_tokens, ctx)
            bar.log(f"step {step}: train loss {loss_ema:.4f}, val loss {row['val_loss']:.4f}, "
                    f"val bpb {row['val_bpb']:.4f}")
        history.append(row)
        bar.update(frac, step=step, loss=loss_ema)
    seconds = time.perf_counter() - start
    bar.update(1.0, step=step, loss=loss_ema if loss_ema is not None else float("nan"))
    model.eval()
    return TrainResult(model, step, seconds, step * global_seqs * L, history, ctx.world_size, str(ctx.device))
