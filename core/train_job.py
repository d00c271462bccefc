"""The `train` job: shards + tokenizer in, a golfpack checkpoint out (safetensors + JSON config).

Reads training tokens from `*_train_*` shards and validation tokens from `*_val_*` shards of a folder (or
the files given), trains (core/train.py), measures the float model's validation bpb on the whole
validation split, and saves the checkpoint with its provenance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from core.checkpoint import save_checkpoint
from core.config import ModelConfig
from core.shards import find_shards, load_tokens
from core.tokenizer import Tokenizer
from core.train import TrainConfig, TrainResult, quick_val_bpb, train
from packer.errors import ConfigError


@dataclass(frozen=True)
class TrainJobResult:
    checkpoint: Path
    steps: int
    seconds: float
    tokens_seen: int
    params: int
    val_loss: float
    val_bpb: float


def run_train(data: Path, tokenizer_path: Path, out: Path, model_cfg: ModelConfig, cfg: TrainConfig,
              name: str = "model", progress: bool = True) -> TrainJobResult:
    tok = Tokenizer.load(tokenizer_path)
    if tok.vocab_size != model_cfg.vocab_size:
        raise ConfigError(f"model vocab_size={model_cfg.vocab_size} but tokenizer {tokenizer_path} has "
                          f"{tok.vocab_size} pieces")
    train_tokens = load_tokens(find_shards(Path(data), "train"))
    val_tokens = load_tokens(find_shards(Path(data), "val"))
    tables = tok.byte_tables()
    result: TrainResult = train(model_cfg, cfg, train_tokens, val_tokens, tables, progress=progress)
    val_loss, val_bpb = quick_val_bpb(result.model, val_tokens, tables, len(val_tokens) - 1)
    meta = {"tokenizer_sha256": tok.sha256, "train": asdict(cfg), "steps": result.steps,
            "seconds": round(result.seconds, 3), "tokens_seen": result.tokens_seen,
            "val_loss": val_loss, "val_bpb": val_bpb}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(out / name, result.model, model_cfg, meta)
    return TrainJobResult(path, result.steps, result.seconds, result.tokens_seen,
                          result.model.num_parameters(), val_loss, val_bpb)
