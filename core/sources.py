"""Model sources: anything a command can take in place of an artifact, as one config + float tensors.

A source is a golfpack checkpoint (`<stem>.safetensors` + `<stem>.json`, any family in core/families.py) or
a foreign checkpoint without a golfpack JSON beside it (a `.pt` state_dict, safetensors, Parameter Golf's
`.ptz`), read by core/ingest.py and rebuilt as the `pgolf` family with the architecture options shapes
cannot tell (PGolfOptions). Also owns `ingest_to_checkpoint`, which writes a foreign checkpoint as a
golfpack checkpoint of family `pgolf` so every other command can take it.
Must not quantize, pack, or evaluate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from common.errors import CheckpointError, ConfigError, MismatchError, UsageError, flag
from core.checkpoint import check_checkpoint_outputs, checkpoint_paths, load_checkpoint, save_checkpoint
from core.families import Family, build_model, family
from core.ingest import file_sha256, load_state_dict_file
from core.pgolf_model import PGolfConfig, infer_pgolf_config
from core.tokenizer import Tokenizer

# what shapes cannot tell, with PGolfConfig's own defaults (relu^2, RoPE base 10000, softcap 30)
PGOLF_DEFAULTS = {f.name: f.default for f in fields(PGolfConfig)
                  if f.name in ("mlp_power", "rope_base", "softcap", "layer_schedule")}


@dataclass(frozen=True)
class PGolfOptions:
    """What a Parameter Golf state_dict's shapes cannot tell; None = not given (defaults: PGOLF_DEFAULTS)."""

    mlp_power: int | None = None
    rope_base: float | None = None
    softcap: float | None = None
    layer_schedule: tuple[int, ...] | None = None      # the block applied at each virtual layer (looped models)

    def __post_init__(self) -> None:
        sched = self.layer_schedule
        if sched is not None and (not isinstance(sched, tuple) or not sched
                                  or not all(isinstance(i, int) and i >= 0 for i in sched)):
            raise ConfigError(f"--layer-schedule {sched!r}: give the block index of every applied layer, e.g. "
                              f"0,1,2,3,4,5,3,4,5,6,7")
        power = self.mlp_power
        if power is not None and (not isinstance(power, int) or isinstance(power, bool) or power < 1):
            raise ConfigError(f"--mlp-power {self.mlp_power!r}: must be a positive integer")
        for name in ("rope_base", "softcap"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0 < v < float("inf")):
                raise ConfigError(f"{flag(name)} {v!r}: must be a positive finite number")

    @staticmethod
    def parse_schedule(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise ConfigError(f"--layer-schedule {text!r}: give comma-separated block indices") from None

    def given(self) -> dict:
        return {k: getattr(self, k) for k in PGOLF_DEFAULTS if getattr(self, k) is not None}

    def resolved(self, fallback: PGolfConfig | None = None) -> dict:
        """Given values, else `fallback`'s (the model being compared against), else PGOLF_DEFAULTS."""
        base = {k: getattr(fallback, k) for k in PGOLF_DEFAULTS} if fallback is not None else PGOLF_DEFAULTS
        return {**base, **self.given()}


NO_PGOLF_OPTIONS = PGolfOptions()    # nothing given: shapes + PGOLF_DEFAULTS


@dataclass(frozen=True)
class ModelSource:
    """A model's family, config and tensors (float32, the checkpoint's names), and where they came from.

    `meta` is a golfpack checkpoint's recorded metadata (training options, hold-out, tokenizer; {} for foreign
    files); `paths` are the files it was read from, which no output may overwrite."""

    family: str
    config: object
    tensors: dict[str, torch.Tensor]
    tokenizer_sha256: str | None
    provenance: dict = field(default_factory=dict)   # kind, format, sha256, file
    meta: dict = field(default_factory=dict)
    paths: tuple[Path, ...] = ()

    def model(self, share: bool = False) -> torch.nn.Module:
        """The model with these tensors (`share`: as its parameters, not copies; see core.families.build_model)."""
        return build_model(self.family, self.config, self.tensors, self.provenance.get("file", "checkpoint"), share)

    @property
    def family_hooks(self) -> Family:
        return family(self.family)

    def resolve_tokenizer(self, tokenizer: Tokenizer | None) -> str | None:
        """The tokenizer sha256 to record: the given tokenizer's, which must match any the source records; a
        foreign checkpoint records none, so it needs one."""
        where = self.provenance.get("file", "the checkpoint")
        if tokenizer is None:
            if self.tokenizer_sha256 is None and self.provenance.get("kind") == "foreign":
                raise UsageError(f"{where}: a foreign checkpoint records no tokenizer; pass --tokenizer with the "
                                 f"SentencePiece model it was trained with (Parameter Golf: fineweb_1024_bpe.model)")
            return self.tokenizer_sha256
        if self.tokenizer_sha256 is not None and self.tokenizer_sha256 != tokenizer.sha256:
            raise MismatchError(f"{where} was made with tokenizer sha256 {self.tokenizer_sha256[:12]}…, but "
                                f"--tokenizer {tokenizer.path} is {tokenizer.sha256[:12]}…; pass the matching one")
        if tokenizer.vocab_size > self.config.vocab_size:
            raise MismatchError(f"--tokenizer {tokenizer.path} has {tokenizer.vocab_size} pieces but {where} embeds "
                                f"only {self.config.vocab_size}; it was not trained with this tokenizer")
        return tokenizer.sha256

    def manifest_body(self, tokenizer_sha256: str | None) -> dict:
        """The manifest members an artifact of this model carries besides its tensors, tool and options: the
        model (family and config), uniform routing (pack may replace it by a calibrated rule), the tokenizer,
        and the source checkpoint's format and content hash when known (never a path: packs stay
        deterministic)."""
        body = {"model": {"family": self.family, "config": self.config.to_dict()},
                "routing": self.family_hooks.uniform_routing(self.config),
                "tokenizer": {"sha256": tokenizer_sha256, "vocab_size": self.config.vocab_size}}
        source = {k: self.provenance[k] for k in ("format", "sha256") if k in self.provenance}
        if source:
            body["source"] = source
        return body


def is_golfpack_checkpoint(path: Path) -> bool:
    """True when `path` (a .safetensors/.json file or their stem) has a golfpack checkpoint JSON beside it."""
    path = Path(path)
    st_path, js_path = checkpoint_paths(path)
    if path.suffix in (".safetensors", ".json"):
        return js_path.is_file()
    return not path.exists() and (st_path.is_file() or js_path.is_file())


def checkpoint_family(path: Path) -> str | None:
    """The family a golfpack checkpoint's JSON records (`recurrent` when absent); None for a foreign file."""
    if not is_golfpack_checkpoint(path):
        return None
    js_path = checkpoint_paths(Path(path))[1]
    try:
        doc = json.loads(js_path.read_text(encoding="utf-8"))
        return doc["model"].get("family", "recurrent")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{js_path}: not a golfpack checkpoint config: {exc}") from None


def check_options_match(cfg: PGolfConfig, opts: PGolfOptions, where: str) -> None:
    for key, value in opts.given().items():
        if getattr(cfg, key) != value:
            raise UsageError(f"{where} records {key}={getattr(cfg, key)!r} but {flag(key)} "
                             f"{value!r} was given; drop the option, or re-ingest the original checkpoint")


def load_source(path: Path, opts: PGolfOptions = NO_PGOLF_OPTIONS, fallback: PGolfConfig | None = None
                ) -> ModelSource:
    """Read a golfpack or foreign checkpoint. Foreign ones become `pgolf` with `opts.resolved(fallback)`."""
    path = Path(path)
    if is_golfpack_checkpoint(path):
        ckpt = load_checkpoint(path)
        if ckpt.family == "pgolf":
            check_options_match(ckpt.config, opts, str(ckpt.path))
        elif opts.given():
            raise UsageError(f"{ckpt.path} is a {ckpt.family!r} checkpoint; --mlp-power, --rope-base and "
                             f"--softcap apply to Parameter Golf checkpoints only")
        tensors = {k: v.float() for k, v in ckpt.tensors.items()}
        # where the weights came from: a foreign file it was ingested from (its format and hash), else this
        # checkpoint's own tensors (the hash of its .safetensors file), so artifacts name their source
        own = {"format": "golfpack", "sha256": file_sha256(ckpt.path)}
        source = ckpt.meta.get("source") if isinstance(ckpt.meta.get("source"), dict) else own
        prov = {**source, "kind": "golfpack-checkpoint", "file": str(ckpt.path)}
        return ModelSource(ckpt.family, ckpt.config, tensors, ckpt.meta.get("tokenizer_sha256"), prov, ckpt.meta,
                           (path, *checkpoint_paths(path)))
    ing = load_state_dict_file(path)
    cfg = infer_pgolf_config(ing.tensors, **opts.resolved(fallback))
    tensors = {k: v.float() for k, v in ing.tensors.items()}
    prov = {"kind": "foreign", "format": ing.source_format, "sha256": ing.source_sha256, "file": str(path)}
    return ModelSource("pgolf", cfg, tensors, None, prov, {}, (path,))


def ingest_to_checkpoint(path: Path, out_stem: Path, tokenizer: Tokenizer,
                         opts: PGolfOptions = NO_PGOLF_OPTIONS, force: bool = False) -> tuple[ModelSource, Path, Path]:
    """Write a foreign checkpoint as `<out_stem>.safetensors` + `.json` (family pgolf, tokenizer recorded)."""
    path, out_stem = Path(path), Path(out_stem)
    st_path, js_path = check_checkpoint_outputs(out_stem, [path, tokenizer.path], force)
    if is_golfpack_checkpoint(path):
        raise UsageError(f"{path} is already a golfpack checkpoint ({checkpoint_paths(path)[1]} is beside it); "
                         f"every command takes it as it is")
    src = load_source(path, opts)
    if tokenizer.vocab_size > src.config.vocab_size:
        raise MismatchError(f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} pieces but {path} embeds only "
                         f"{src.config.vocab_size}; it was not trained with this tokenizer")
    model = src.model()
    source = {k: src.provenance[k] for k in ("format", "sha256")}
    source["file"] = path.name
    meta = {"tokenizer_sha256": tokenizer.sha256, "source": source,
            "params": sum(p.numel() for p in model.parameters())}
    save_checkpoint(out_stem, model, src.config, meta, family="pgolf")
    return ModelSource("pgolf", src.config, src.tensors, tokenizer.sha256, src.provenance, meta,
                       (st_path, js_path)), st_path, js_path


def ingest_job(path: Path, out_stem: Path, tokenizer_path: Path, opts: PGolfOptions = NO_PGOLF_OPTIONS,
               force: bool = False) -> dict:
    """The `ingest` command: a foreign Parameter Golf checkpoint written as a golfpack checkpoint; the report."""
    tok = Tokenizer.load(tokenizer_path)
    src, st_path, js_path = ingest_to_checkpoint(path, out_stem, tok, opts, force)
    return {"checkpoint": str(st_path), "config": str(js_path), "family": "pgolf", "model": src.config.to_dict(),
            "params": sum(t.numel() for t in src.tensors.values()), "source": src.provenance,
            "tokenizer_sha256": tok.sha256}


def format_ingest(rep: dict) -> str:
    m = rep["model"]
    return (f"wrote {rep['checkpoint']} + {Path(rep['config']).name}: Parameter Golf GPT, {rep['params']:,} params, "
            f"{m['num_layers']} layers x d={m['model_dim']}, relu^{m['mlp_power']}, from {rep['source']['format']} "
            f"{rep['source']['file']}")
