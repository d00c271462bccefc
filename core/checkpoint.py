"""golfpack checkpoints: `<stem>.safetensors` (tensors) beside `<stem>.json` (model family, config, metadata).

No pickle. Saving is atomic per file. The JSON's `model.family` (core/families.py; `recurrent` when absent)
selects the config class. Loading checks the tensors against the config's architecture.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from common.atomic import check_output, write_bytes_atomic
from common.errors import CheckpointError, ConfigError
from core.config import ModelConfig
from core.families import config_from_dict


@dataclass
class Checkpoint:
    config: ModelConfig          # or the config class of `family` (core/families.py)
    tensors: dict[str, torch.Tensor]
    meta: dict
    path: Path | None = None
    family: str = "recurrent"


def checkpoint_paths(path: Path) -> tuple[Path, Path]:
    """(safetensors, json) for a path given as either file or the common stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def is_checkpoint_file(path: Path) -> bool:
    """Whether `path` is one file of a golfpack checkpoint: a JSON whose `format` says so, or a .safetensors file
    with such a JSON beside it (what commands that write checkpoints may replace without --force)."""
    js_path = checkpoint_paths(Path(path))[1]
    if Path(path).suffix not in (".json", ".safetensors") or not js_path.is_file():
        return False
    try:
        return json.loads(js_path.read_text(encoding="utf-8")).get("format") == "golfpack-checkpoint"
    except (OSError, ValueError, AttributeError):
        return False


def check_checkpoint_outputs(path: Path, inputs: list[Path], force: bool = False) -> tuple[Path, Path]:
    """The (safetensors, json) a checkpoint written at `path` takes, checked before any work (common.atomic)."""
    st_path, js_path = checkpoint_paths(Path(path))
    for out in (st_path, js_path):
        check_output(out, inputs, force, is_checkpoint_file, "a golfpack checkpoint file")
    return st_path, js_path


def save_checkpoint(path: Path, model: torch.nn.Module, config: ModelConfig, meta: dict,
                    family: str = "recurrent") -> Path:
    st_path, js_path = checkpoint_paths(path)
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in model.state_dict().items()}
    write_bytes_atomic(st_path, save(tensors))
    doc = {"format": "golfpack-checkpoint", "version": 1, "model": {"family": family,
                                                                     "config": config.to_dict()}, "meta": meta}
    write_bytes_atomic(js_path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return st_path


def load_checkpoint(path: Path) -> Checkpoint:
    st_path, js_path = checkpoint_paths(path)
    for p in (st_path, js_path):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {p} is missing (a golfpack checkpoint is a .safetensors "
                                  f"file with a .json config beside it)")
    try:
        doc = json.loads(js_path.read_text())
        family = doc["model"].get("family", "recurrent")
        config = config_from_dict(family, doc["model"]["config"])
    except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as exc:
        raise CheckpointError(f"{js_path}: not a golfpack checkpoint config: {exc}") from None
    try:
        tensors = load_file(str(st_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{st_path}: cannot read safetensors: {exc}") from None
    return Checkpoint(config, tensors, doc.get("meta", {}), st_path, family)
