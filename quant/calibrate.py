"""Calibration on TRAINING tokens: token windows, input Hessians H = sum x x^T per weight, and calibration loss.

Tokens come only from a folder's `*_train_*` shards (or a shard file whose name says `_train_`); validation
shards are never opened, so an artifact calibrated here stays legal. Hessians are collected with forward
pre-hooks on every nn.Linear (a shared block applied K times fires its hooks K times, so its Hessian sums
over all passes) plus, for the tied head, a hook on the module whose output the head multiplies (for the
recurrent core, `norm_f`). LossEvaluator measures the mean loss with some weights replaced, for the
planner's sensitivities. Forward passes run with a fixed number of torch threads (CALIB_THREADS), so the
Hessians, hence GPTQ's codes and the artifact's bytes, do not depend on the caller's thread setting.
Must not: quantize, choose formats, or read validation data.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import ConfigError, DataError, UsageError
from common.progress import Progress
from core.shards import find_shards, load_tokens
from quant.hessian import Hessian

DEFAULT_CALIB_TOKENS = 8192
DEFAULT_JOINT_TOKENS = 65_536     # the planner's joint check: ~10 evaluations per budget, so it can afford more
CALIB_THREADS = 1


@contextmanager
def torch_threads(n: int):
    """Run a block with n torch intra-op threads, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class CalibConfig:
    """Where and how much to calibrate. None token counts are defaults: DEFAULT_* tokens, or fewer when the
    checkpoint's hold-out holds fewer (UnseenTokens.take); a number given is a request, refused when the
    hold-out cannot hold it."""

    data: Path | None = None          # shard folder (its *_train_* files) or one *_train_* shard file
    tokens: int | None = None         # Hessians and the planner's per-tensor sensitivities
    joint_tokens: int | None = None   # the planner's joint loss of whole plans (0: use `tokens`)
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.tokens is not None and (not isinstance(self.tokens, int) or self.tokens < 2):
            raise ConfigError(f"--calib-tokens {self.tokens!r}: must be an integer >= 2")
        jt = self.joint_tokens
        if jt is not None and (not isinstance(jt, int) or jt < 0 or jt == 1):
            raise ConfigError(f"--joint-tokens {jt!r}: must be 0 or an integer >= 2")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"CalibConfig.batch_size={self.batch_size!r}: must be a positive integer")


def train_shards(data: Path) -> list[Path]:
    """The training shards of a folder, or a single shard file that is named as training data."""
    data = Path(data)
    if data.is_file():
        if "_train_" not in data.name:
            raise UsageError(f"--calib-data {data}: a single shard file must be a training shard (its name "
                             f"holds '_train_'); calibration never reads validation data")
        return [data]
    return find_shards(data, "train")


def default_calib_data(ckpt_path: Path) -> Path | None:
    """The checkpoint's folder when it holds training shards (as `golfpack demo` and `train` leave them)."""
    folder = Path(ckpt_path).resolve().parent
    return folder if any(p.is_file() for p in folder.glob("*_train_*.bin")) else None


def calibration_tokens(data: Path, vocab_size: int, tail: int = 0) -> np.ndarray:
    """The training tokens of `data` (with `tail`, their last `tail` only), checked against the vocabulary."""
    tokens = load_tokens(train_shards(data))
    if tail:
        tokens = tokens[-tail:]
    if len(tokens) < 2:
        raise DataError(f"--calib-data {data}: the training shards hold {len(tokens)} tokens; need at least 2")
    if int(tokens.max()) >= vocab_size:
        raise DataError(f"--calib-data {data}: token id {int(tokens.max())} is outside the model's vocabulary "
                        f"of {vocab_size}; these shards were made with another tokenizer")
    return tokens


def spread_windows(tokens: np.ndarray, n_tokens: int, seq_len: int) -> np.ndarray:
    """int64 [N, L+1] windows (L = min(seq_len, stream)) spread evenly over `tokens`, N*L ~ n_tokens."""
    L = min(seq_len, len(tokens) - 1)
    n_win = max(1, min(n_tokens // L, len(tokens) - L))
    starts = np.linspace(0, len(tokens) - L - 1, n_win).round().astype(np.int64)
    return np.stack([np.asarray(tokens[s:s + L + 1], dtype=np.int64) for s in starts])


def calibration_windows(data: Path, n_tokens: int, seq_len: int, vocab_size: int, tail: int = 0) -> np.ndarray:
    """Windows spread evenly over the training tokens of `data` (with `tail`, over their last `tail` only)."""
    return spread_windows(calibration_tokens(data, vocab_size, tail), n_tokens, seq_len)


def checkpoint_holdout(meta: dict) -> int:
    """How many tokens at the end of its training stream a golfpack checkpoint never trained on (0 if none
    or unknown: checkpoints from before the hold-out, and foreign ones)."""
    train = meta.get("train") if isinstance(meta, dict) else None
    n = train.get("holdout_tokens", 0) if isinstance(train, dict) else 0
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0


@dataclass(frozen=True)
class UnseenTokens:
    """The calibration tokens of a checkpoint: the training shards' tail it held out of training, or, when it
    records no hold-out (foreign checkpoints, older ones), all of them. Every calibration draws from these."""

    tokens: np.ndarray
    data: Path
    holdout: int          # tokens the checkpoint held out (0: it records none, and every token is used)

    def need(self, n_targets: int, option: str) -> None:
        """UsageError naming both numbers when a calibration asks for more tokens than the hold-out holds
        (n_targets scored tokens need one more: the token before the first)."""
        if self.holdout and n_targets + 1 > self.holdout:
            raise UsageError(f"{option} {n_targets:,} needs {n_targets + 1:,} training tokens, but the checkpoint "
                             f"held out only {self.holdout:,} from its training (meta.train.holdout_tokens); "
                             f"calibrating on more would use tokens the model trained on. Give {option} "
                             f"{self.holdout - 1:,} or less, or retrain with a larger --holdout-tokens")

    def take(self, requested: int | None, default: int, option: str) -> int:
        """How many tokens a calibration uses: `requested` if the hold-out holds it (else UsageError), or, when
        nothing was requested, `default` capped at what the hold-out holds."""
        if requested is not None:
            self.need(requested, option)
            return requested
        return min(default, self.holdout - 1) if self.holdout else default

    def describe(self) -> str:
        where = (f"the last {self.holdout:,} (held out from training) of " if self.holdout
                 else "all (the checkpoint records no hold-out) of ")
        return f"{where}the training shards in {self.data}"

    def report(self) -> dict:
        return {"data": str(self.data), "tokens": len(self.tokens), "holdout_tokens": self.holdout or None}


def unseen_tokens(meta: dict, data: Path, vocab_size: int) -> UnseenTokens:
    """The tokens of `data`'s training shards that a checkpoint with metadata `meta` never trained on: the
    one place that decides it (GPTQ's Hessians, the planner's sensitivities and joint checks, and the routing
    rule's threshold and probe all calibrate on these)."""
    holdout = checkpoint_holdout(meta)
    return UnseenTokens(calibration_tokens(Path(data), vocab_size, holdout), Path(data), holdout)


JOINT_EVAL_FLOPS = 1e11    # the default joint set is no larger than one forward of this cost (about 2 s here)


def default_joint_tokens(params: int, calib_tokens: int) -> int:
    """The joint check's default size: DEFAULT_JOINT_TOKENS for small models, down to the calibration set's
    size as the model grows (a forward costs about 2 x params FLOPs per token; at 36M parameters 65,536 tokens
    took minutes per plan)."""
    return int(min(DEFAULT_JOINT_TOKENS, max(calib_tokens, JOINT_EVAL_FLOPS // max(1, 2 * params))))


def calibration_sets(unseen: UnseenTokens, calib: CalibConfig, seq_len: int, progress: bool = True,
                     params: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """(windows for Hessians and sensitivities, windows for the planner's joint check or None = the same),
    spread evenly over the unseen tokens: on tokens a model has memorised, quantization damage does not look
    as it will on new text, and a plan chosen there can lose on validation. Said on stderr. The joint set's
    default shrinks with the model's `params` (default_joint_tokens)."""
    n = unseen.take(calib.tokens, DEFAULT_CALIB_TOKENS, "--calib-tokens")
    n_joint = (unseen.take(calib.joint_tokens, default_joint_tokens(params, n), "--joint-tokens")
               if calib.joint_tokens != 0 else 0)
    windows = spread_windows(unseen.tokens, n, seq_len)
    joint = spread_windows(unseen.tokens, n_joint, seq_len) if n_joint and n_joint != n else None
    if progress:
        extra = "" if joint is None else f"; whole plans on {joint.shape[0]} x {joint.shape[1] - 1}"
        sys.stderr.write(f"pack: calibrating on {windows.shape[0]} x {windows.shape[1] - 1} tokens of "
                         f"{unseen.describe()}{extra}\n")
    return windows, joint


def default_head_inputs(model: nn.Module) -> dict[str, nn.Module]:
    """weight name -> module whose output the weight multiplies outside an nn.Linear (the tied head)."""
    if hasattr(model, "norm_f") and hasattr(model, "tok_emb"):
        return {"tok_emb.weight": model.norm_f}
    return {}


LOGITS_BUDGET = 1 << 25     # float32 logits one calibration batch may hold (128 MiB): bounds memory at vocab 8192
BATCH_TOKENS = 2048         # tokens per calibration batch: the activations of more cost memory, not time (measured:
                            # a 17M model's Hessian pass peaked at 459 MiB with 1 window of 1024, 1,040 with 8)


def batch_windows(batch_size: int, window_tokens: int, vocab_size: int) -> int:
    """Windows per calibration batch: at most batch_size, at most BATCH_TOKENS tokens, and few enough that the
    batch's logits fit LOGITS_BUDGET."""
    return max(1, min(batch_size, BATCH_TOKENS // max(1, window_tokens),
                      LOGITS_BUDGET // max(1, window_tokens * vocab_size)))


def _batches(windows: np.ndarray, batch_size: int):
    for i in range(0, len(windows), batch_size):
        yield torch.from_numpy(windows[i:i + batch_size])


@torch.no_grad()
def collect_hessians(model: nn.Module, windows: np.ndarray, batch_size: int = 16,
                     head_inputs: dict[str, nn.Module] | None = None, progress: bool = True) -> dict[str, Hessian]:
    """Input Hessians of every nn.Linear weight (and of `head_inputs`) over the windows' input tokens."""
    acc: dict[str, list] = {}

    def hook_for(name: str):
        def add(x: torch.Tensor) -> None:
            x = x.detach().reshape(-1, x.shape[-1]).float()
            entry = acc.setdefault(name, [torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32), 0])
            entry[0] += x.T @ x                 # float32: half the memory of float64, ample for GPTQ's damped use
            entry[1] += x.shape[0]
        return add

    handles = []
    for mname, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            add = hook_for(f"{mname}.weight")
            handles.append(mod.register_forward_pre_hook(lambda m, inp, add=add: add(inp[0])))
    for wname, mod in (default_head_inputs(model) if head_inputs is None else head_inputs).items():
        add = hook_for(wname)
        handles.append(mod.register_forward_hook(lambda m, inp, out, add=add: add(out)))
    was_training = model.training
    model.eval()
    bar = Progress("calibrate (hessians)", len(windows), enabled=progress)
    try:
        done = 0
        with torch_threads(CALIB_THREADS):
            for batch in _batches(windows, batch_size):
                model(batch[:, :-1])
                done += len(batch)
                bar.update(done)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {k: Hessian(v[0].numpy(), int(v[1])) for k, v in acc.items()}


class LossEvaluator:
    """Mean next-token loss (nats) of a model on calibration windows, optionally with weights replaced."""

    def __init__(self, model: nn.Module, windows: np.ndarray, batch_size: int = 16) -> None:
        self.model = model.eval()               # runs where the model's parameters are (pack --device)
        self.device = next(model.parameters()).device
        self.windows = windows
        self.batch_size = batch_size
        self.params = dict(model.named_parameters())
        self.evals = 0
        self.seconds = 0.0
        self.base = self.loss()

    @torch.no_grad()
    def loss(self) -> float:
        t0 = time.perf_counter()
        total, count = 0.0, 0
        with torch_threads(CALIB_THREADS):
            for batch in _batches(self.windows, self.batch_size):
                batch = batch.to(self.device)
                logits = self.model(batch[:, :-1])
                y = batch[:, 1:]
                total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                               reduction="sum"))
                count += y.numel()
        self.evals += 1
        self.seconds += time.perf_counter() - t0
        return total / count

    @torch.no_grad()
    def loss_with(self, replacements: dict[str, np.ndarray]) -> float:
        """Loss with the named parameters temporarily set to the given arrays (then restored exactly)."""
        saved = {}
        try:
            for name, arr in replacements.items():
                if name not in self.params:
                    raise UsageError(f"cannot replace {name!r}: the model has no such parameter")
                p = self.params[name]
                saved[name] = p.detach().clone()
                p.copy_(torch.from_numpy(np.asarray(arr, dtype=np.float32)).reshape(p.shape).to(p.device))
            return self.loss()
        finally:
            for name, old in saved.items():
                self.params[name].copy_(old)
