"""What `verify` evaluates: an artifact, or a checkpoint taken as it is, opened into one runnable model.

A path starting with the artifact magic is read and validated by packer.reader and rebuilt by quant.unpack;
anything else is a model source (core/sources.py: a golfpack checkpoint of any family, or a `.pt`, `.ptz`
or safetensors Parameter Golf checkpoint). Also owns the checks that a tokenizer, a context length
(core.families.eval_context) and a token stream fit the model. Must not score anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from common.errors import ConfigError, DataError, MismatchError, UsageError
from core.families import eval_context
from core.sources import NO_PGOLF_OPTIONS, PGolfOptions, check_options_match, load_source
from core.tokenizer import Tokenizer
from packer import constants as C
from packer.manifest import made_by
from packer.reader import read_artifact
from quant.unpack import build_model


@dataclass
class EvalTarget:
    path: Path
    kind: str                   # 'artifact' | 'golfpack-checkpoint' | 'foreign'
    family: str
    config: object
    model: nn.Module
    tokenizer_sha256: str | None
    info: dict                  # report fields: sha256, routing, made_by / format, source sha256

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size


def _is_artifact(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(len(C.MAGIC)) == C.MAGIC


def open_target(path: Path, pgolf: PGolfOptions = NO_PGOLF_OPTIONS, fallback=None) -> EvalTarget:
    """The model at `path`. Foreign checkpoints take --mlp-power etc. from `pgolf`, else from `fallback`
    (the pgolf config of the model they are compared with), else the defaults (core/sources.py)."""
    path = Path(path)
    if _is_artifact(path):
        art = read_artifact(path)
        model = build_model(art)
        family = art.manifest["model"]["family"]
        if family == "pgolf":
            check_options_match(model.cfg, pgolf, str(path))
        elif pgolf.given():
            raise UsageError(f"{path} holds a {family!r} model; --mlp-power, --rope-base and --softcap apply to "
                             f"Parameter Golf models only")
        info = {"sha256": art.file_sha256, "trailer_sha256": art.trailer_sha256, "routing": art.manifest["routing"], "made_by": made_by(art.manifest)}
        if "source" in art.manifest:
            info["source"] = art.manifest["source"]
        return EvalTarget(path, "artifact", family, model.cfg, model, art.manifest["tokenizer"].get("sha256"),
                          info)
    src = load_source(path, pgolf, fallback)
    model = src.model()
    recorded = src.meta.get("routing")          # a checkpoint `golfpack unpack` wrote runs the artifact's rule
    routing = recorded if isinstance(recorded, dict) else src.family_hooks.uniform_routing(src.config)
    info = {"routing": routing, **{k: v for k, v in src.provenance.items() if k in ("format", "sha256")}}
    return EvalTarget(path, src.provenance["kind"], src.family, src.config, model, src.tokenizer_sha256, info)


def context_length(target: EvalTarget, seq_len: int | None) -> int:
    """The evaluation context: pgolf models take any length (default 1024); recurrent cores their own."""
    try:
        return eval_context(target.family, target.config, seq_len)
    except ConfigError as exc:
        raise UsageError(f"{target.path}: --seq-len: {exc}") from None


def check_tokenizer(target: EvalTarget, tok: Tokenizer) -> None:
    """MismatchError when `target` records another tokenizer than `tok`, or embeds fewer pieces than it has."""
    want = target.tokenizer_sha256
    if want and want != tok.sha256:
        raise MismatchError(f"tokenizer {tok.path} (sha256 {tok.sha256[:12]}…) is not the one {target.path} was "
                            f"made with (sha256 {want[:12]}…); pass the matching --tokenizer")
    if tok.vocab_size > target.vocab_size:
        raise MismatchError(f"tokenizer {tok.path} has {tok.vocab_size} pieces but {target.path} embeds only "
                            f"{target.vocab_size}; it was not made with this tokenizer")


def check_tokens(target: EvalTarget, tokens: np.ndarray) -> None:
    if len(tokens) and int(np.max(tokens)) >= target.vocab_size:
        raise DataError(f"the data holds token id {int(np.max(tokens))}, but {target.path} has a vocabulary of "
                        f"{target.vocab_size}; the data was encoded with another tokenizer")
