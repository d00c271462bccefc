"""The `train` job: shards + tokenizer in, a golfpack checkpoint out (safetensors + JSON config).

Reads training tokens from `*_train_*` shards and validation tokens from `*_val_*` shards of a folder (or
the files given), trains (core/train.py), measures the float model's validation bpb on the whole
validation split, and saves the checkpoint with its provenance. Runs unchanged under torchrun: the
process group lives for the job (core/distributed.py), every rank trains and scores its share, and only
rank 0 writes the checkpoint (the same files as a single process writes) and shows progress.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.atomic import ensure_folder
from common.errors import ConfigError, UsageError
from core.checkpoint import check_checkpoint_outputs, save_checkpoint
from core.config import ModelConfig
from core.distributed import distributed_session
from core.shards import find_shards, load_tokens
from core.tokenizer import Tokenizer
from core.train import TrainConfig, TrainResult, quick_val_bpb, train


@dataclass(frozen=True)
class TrainJobResult:
    checkpoint: Path | None  # None on ranks other than 0 (they write nothing)
    steps: int
    seconds: float
    tokens_seen: int
    params: int
    val_loss: float
    val_bpb: float
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    history: list[dict] = field(default_factory=list)  # per-step rows of core/train.py's TrainResult


def train_configs(*, vocab_size: int, d_model: int, n_heads: int, n_kv_heads: int, mlp_mult: int, n_passes: int,
                  n_blocks: int, seq_len: int, train_seconds: float | None, steps: int | None,
                  max_wallclock_seconds: float | None, batch_size: int | None, batch_tokens: int | None, **train
                  ) -> tuple[ModelConfig, TrainConfig]:
    """The train command's options as (model config, training config): 180 s when no budget is given, batch
    size 16 unless --batch-size or --batch-tokens says otherwise (not both); `train` holds the rest of
    TrainConfig's fields by their command-line names (compile_ for --compile)."""
    mc = ModelConfig(vocab_size=vocab_size, d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads,
                     mlp_mult=mlp_mult, n_passes=n_passes, n_blocks=n_blocks, seq_len=seq_len)
    if train_seconds is None and steps is None and max_wallclock_seconds is None:
        train_seconds = 180.0
    if batch_size is not None and batch_tokens is not None:
        raise UsageError("give --batch-size or --batch-tokens, not both")
    train["compile"] = train.pop("compile_", False)
    return mc, TrainConfig(steps=steps, train_seconds=train_seconds, batch_size=batch_size or 16,
                           batch_tokens=batch_tokens, max_wallclock_seconds=max_wallclock_seconds, **train)


def run_train(data: Path, tokenizer_path: Path, out: Path, model_cfg: ModelConfig, cfg: TrainConfig,
              name: str = "model", progress: bool = True, force: bool = False) -> TrainJobResult:
    """Train and save `<out>/<name>.safetensors` + `.json`; the outputs are checked before training starts."""
    shards = [*find_shards(Path(data), "train"), *find_shards(Path(data), "val")]
    check_checkpoint_outputs(ensure_folder(out) / name, [*shards, Path(tokenizer_path)], force)
    with distributed_session(cfg.device) as ctx:
        tok = Tokenizer.load(tokenizer_path)
        if tok.vocab_size != model_cfg.vocab_size:
            raise ConfigError(f"model vocab_size={model_cfg.vocab_size} but tokenizer {tokenizer_path} has "
                              f"{tok.vocab_size} pieces")
        train_tokens = load_tokens(find_shards(Path(data), "train"))
        val_tokens = load_tokens(find_shards(Path(data), "val"))
        tables = tok.byte_tables()
        result: TrainResult = train(model_cfg, cfg, train_tokens, val_tokens, tables, progress=progress,
                                    ctx=ctx)
        val_loss, val_bpb = quick_val_bpb(result.model, val_tokens, tables, len(val_tokens) - 1, ctx)
        path = None
        if ctx.is_main:
            meta = {"tokenizer_sha256": tok.sha256, "train": asdict(cfg), "steps": result.steps,
                    "seconds": round(result.seconds, 3), "tokens_seen": result.tokens_seen,
                    "world_size": ctx.world_size, "device": str(ctx.device),
                    "val_loss": val_loss, "val_bpb": val_bpb}
            path = save_checkpoint(Path(out) / name, result.model, model_cfg, meta)
        return TrainJobResult(path, result.steps, result.seconds, result.tokens_seen,
                              result.model.num_parameters(), val_loss, val_bpb, ctx.rank, ctx.world_size,
                              str(ctx.device), result.history)


def train_report(res: TrainJobResult) -> dict:
    """The `train` command's report (rank 0's)."""
    return {"checkpoint": str(res.checkpoint), "steps": res.steps, "seconds": res.seconds,
            "tokens_seen": res.tokens_seen, "params": res.params, "val_loss": res.val_loss, "val_bpb": res.val_bpb,
            "world_size": res.world_size, "device": res.device}


def format_train(rep: dict) -> str:
    return (f"checkpoint {rep['checkpoint']}: {rep['params']:,} params, {rep['steps']} steps in {rep['seconds']:.0f} s, "
            f"val bpb {rep['val_bpb']:.4f}")
