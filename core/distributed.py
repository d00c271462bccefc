"""torchrun awareness in ONE place: rank, world size, local rank, the device, and the process group.

The only module of golfpack that reads environment variables, and only torchrun's own (RANK, WORLD_SIZE,
LOCAL_RANK; MASTER_ADDR/MASTER_PORT are read by torch itself). Owns device selection (the local rank's GPU
when CUDA is present, else the CPU), the backend (NCCL on CUDA, gloo on CPU), process-group set-up and
teardown (also when the body raises), and the few collectives training needs. Must not know about models,
data or losses: it moves tensors, nothing else.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.errors import ConfigError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
# Sessions opened by this process, in order (the same order on every rank). Each session's process group
# keeps its keys under its own store prefix: torch restarts its own key names after destroy_process_group,
# and a second group reading the first one's stale addresses from torchrun's store can hang.
_SESSION_IDS = itertools.count()


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a torchrun launch; the default is a plain single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ConfigError(f"WORLD_SIZE={self.world_size}: must be at least 1")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"RANK={self.rank}: must be in [0, WORLD_SIZE={self.world_size})")
        if not 0 <= self.local_rank < self.world_size:
            raise ConfigError(f"LOCAL_RANK={self.local_rank}: must be in [0, WORLD_SIZE={self.world_size})")


def read_dist_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK (all three or none); none set means a single process."""
    env = os.environ if environ is None else environ
    present = [k for k in TORCHRUN_VARS if k in env]
    if not present:
        return DistEnv()
    missing = [k for k in TORCHRUN_VARS if k not in env]
    if missing:
        raise ConfigError(f"torchrun environment is incomplete: {present} set but {missing} missing; launch "
                          "with `torchrun --nproc_per_node=N golfpack train ...` or unset them")
    values = {}
    for key in TORCHRUN_VARS:
        try:
            values[key] = int(env[key])
        except ValueError:
            raise ConfigError(f"environment variable {key}={env[key]!r} is not an integer; it should be set "
                              "by torchrun") from None
    return DistEnv(rank=values["RANK"], world_size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"])


def select_device(preference: str, env: DistEnv, cuda_available: bool, cuda_count: int) -> torch.device:
    """The device for this process: 'cpu'; 'cuda' (must exist); 'cuda:N' (one process: GPU N); 'auto' = the
    local rank's GPU if CUDA is available, else the CPU. Pure logic: the caller passes
    torch.cuda.is_available() and the device count."""
    index = preference.removeprefix("cuda:")
    if index != preference and index.isdigit():
        if env.world_size > 1:
            raise ConfigError(f"--device {preference}: under torchrun each rank takes its local rank's GPU; "
                              f"use --device cuda")
        if not cuda_available or int(index) >= cuda_count:
            raise ConfigError(f"--device {preference}: only {cuda_count if cuda_available else 0} GPU(s) visible")
        return torch.device("cuda", int(index))
    if preference not in DEVICE_CHOICES:
        raise ConfigError(f"--device {preference!r} is not one of {list(DEVICE_CHOICES)} or cuda:N")
    if preference == "cpu" or (preference == "auto" and not cuda_available):
        return torch.device("cpu")
    if not cuda_available:
        raise ConfigError("device 'cuda' was asked for but torch.cuda.is_available() is False; install a "
                          "CUDA build of torch or use --device cpu / auto")
    if env.local_rank >= cuda_count:
        raise ConfigError(f"LOCAL_RANK={env.local_rank} has no GPU: only {cuda_count} visible; launch with "
                          f"--nproc_per_node <= {cuda_count}")
    return torch.device("cuda", env.local_rank)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@dataclass(frozen=True)
class DistContext:
    """This process's rank and device; `backend` is None for a single process (every collective a no-op)."""

    env: DistEnv
    device: torch.device
    backend: str | None = None

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        return self.env.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def all_reduce_(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In place: sum or max over ranks (the same bytes on every rank afterwards)."""
        if self.distributed:
            dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
        return tensor

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """In place: replace each tensor by its mean over ranks, in ONE collective on a flat buffer."""
        if not self.distributed or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.world_size)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()

    def broadcast_(self, tensors: list[torch.Tensor], src: int = 0) -> None:
        """In place: every rank gets rank `src`'s values, in one collective."""
        if not self.distributed or not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        dist.broadcast(flat, src=src)
        offset = 0
        for t in tensors:
            t.detach().copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()

    def agree_max(self, value: float) -> float:
        """The largest `value` over ranks (exact, so every rank takes the same decision from it)."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        return float(self.all_reduce_(t, "max").item())


def local_context(device: str = "auto") -> DistContext:
    """A single-process context (no process group) on the chosen device."""
    env = DistEnv()
    cuda = torch.cuda.is_available()
    return DistContext(env, select_device(device, env, cuda, torch.cuda.device_count() if cuda else 0))


@contextmanager
def distributed_session(device: str = "auto",
                        environ: Mapping[str, str] | None = None) -> Iterator[DistContext]:
    """Yield this process's DistContext; under torchrun (WORLD_SIZE > 1) initialise the process group (NCCL on
    CUDA, gloo on CPU) first and destroy it on the way out, also when the body raises. A process group that
    already exists (set up by the caller) is reused and left alone."""
    env = read_dist_env(environ)
    cuda = torch.cuda.is_available()
    dev = select_device(device, env, cuda, torch.cuda.device_count() if cuda else 0)
    if env.world_size == 1:
        yield DistContext(env, dev)
        return
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={env.world_size} but this torch build has no torch.distributed")
    backend = backend_for(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owned = not dist.is_initialized()
    if owned:
        store, _, _ = next(dist.rendezvous("env://", rank=env.rank, world_size=env.world_size))
        store = dist.PrefixStore(f"golfpack_session_{next(_SESSION_IDS)}", store)
        dist.init_process_group(backend=backend, store=store, rank=env.rank, world_size=env.world_size,
                                device_id=dev if dev.type == "cuda" else None)
    elif (dist.get_rank(), dist.get_world_size()) != (env.rank, env.world_size):
        raise ConfigError(f"an existing process group has rank {dist.get_rank()} of {dist.get_world_size()} "
                          f"but torchrun's environment says {env.rank} of {env.world_size}")
    try:
        yield DistContext(env, dev, dist.get_backend())
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()
