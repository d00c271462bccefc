"""Rebuild a runnable model from a validated artifact: decode sections, dequantize, load weights.

The manifest's `model.family` picks the config and model classes from the registry in core/families.py
(`recurrent`: RecurrentLM, `pgolf`: PGolfGPT). Uses only the reader (packer), the format decoders
(quant.formats) and the models (core). Never trains.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.errors import ConfigError, FormatError
from core.families import config_from_dict, family
from packer.reader import Artifact
from quant import formats


def artifact_tensors(art: Artifact) -> dict[str, np.ndarray]:
    """name -> float32 array for every tensor in the manifest (aliases resolved to their target's data)."""
    out: dict[str, np.ndarray] = {}
    tensors = art.manifest["tensors"]
    for t in tensors:
        if "alias_of" in t:
            continue
        arrays = {role: art.array(sec) for role, sec in t["sections"].items()}
        try:
            out[t["name"]] = formats.decode(t["format"], arrays, tuple(t["shape"]))
        except FormatError as exc:                   # the format's own check: the same class, with the tensor named
            raise type(exc)(f"{art.source}: tensor {t['name']!r} ({t['format']}): {exc}") from None
        except (KeyError, ValueError) as exc:
            raise FormatError(f"{art.source}: tensor {t['name']!r} ({t['format']}) cannot be rebuilt from its "
                              f"sections {sorted(t['sections'])}: {exc}") from None
    for t in tensors:
        if "alias_of" in t:
            out[t["name"]] = out[t["alias_of"]]
    return out


def build_model(art: Artifact) -> nn.Module:
    """The artifact's model (RecurrentLM or PGolfGPT, per `model.family`) with its weights, in eval mode."""
    model_doc = art.manifest["model"]
    try:
        model_class = family(model_doc["family"]).model_class
        cfg = config_from_dict(model_doc["family"], model_doc["config"])
    except ConfigError as exc:
        raise FormatError(f"{art.source}: manifest model is invalid: {exc}") from None
    model = model_class(cfg)
    tensors = artifact_tensors(art)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise FormatError(f"{art.source}: tensors do not match the model config: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    state = {}
    for name, ref in expected.items():
        arr = tensors[name]
        if tuple(arr.shape) != tuple(ref.shape):
            raise FormatError(f"{art.source}: tensor {name!r} has shape {arr.shape}, the model needs "
                              f"{tuple(ref.shape)}")
        state[name] = torch.from_numpy(np.array(arr, dtype=np.float32))
    model.load_state_dict(state, strict=True)
    model.eval()
    return model
