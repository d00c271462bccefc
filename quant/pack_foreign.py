"""Packing Parameter Golf checkpoints (the `pgolf` family): foreign `.pt`/`.ptz`/safetensors or ingested ones.

Builds the manifest body (model {"family": "pgolf", "config": PGolfConfig.to_dict()} with the chosen
mlp_power / rope_base / softcap, routing {"policy": "uniform"}, the tokenizer's sha256, the source's format
and sha256) and hands model and tensors to quant.pipeline.pack_model, so the default plan, explicit plans,
calibration (GPTQ, on TRAINING shards only) and the budget planner are the same as for the recurrent
family. The tied head is `tok_emb.weight`, stored once (a tied PGolfGPT has no lm_head).
Must not choose formats itself (quant/pack.py, quant/planner.py do) nor read artifacts.
"""

from __future__ import annotations

from pathlib import Path

from core.checkpoint import checkpoint_paths
from core.families import PGOLF_DEFAULT_SEQ_LEN
from core.sources import NO_PGOLF_OPTIONS, ModelSource, PGolfOptions, load_source
from core.tokenizer import Tokenizer
from packer.atomic import refuse_same_path
from packer.errors import UsageError
from packer.writer import write_artifact
from quant.calibrate import CalibConfig, calibration_sets, default_calib_data
from quant.pack import PackOptions, PackResult
from quant.pipeline import log, pack_model


def pgolf_body(src: ModelSource, tokenizer_sha256: str) -> dict:
    """Manifest members for a pgolf model (everything but tensors, tool and options)."""
    body = {"model": {"family": "pgolf", "config": src.config.to_dict()},
            "routing": {"policy": "uniform"},
            "tokenizer": {"sha256": tokenizer_sha256, "vocab_size": src.config.vocab_size}}
    source = {k: src.provenance[k] for k in ("format", "sha256") if k in src.provenance}
    if source:
        body["source"] = source      # deterministic: content hashes only, never paths
    return body


def resolve_tokenizer(src: ModelSource, tokenizer: Tokenizer | None, where: str) -> str:
    """The tokenizer sha256 to record: the given tokenizer's, checked against any the source records."""
    if tokenizer is None:
        if src.tokenizer_sha256 is None:
            raise UsageError(f"{where}: a foreign checkpoint records no tokenizer; pass --tokenizer with the "
                             f"SentencePiece model it was trained with (Parameter Golf: fineweb_1024_bpe.model)")
        return src.tokenizer_sha256
    if src.tokenizer_sha256 is not None and src.tokenizer_sha256 != tokenizer.sha256:
        raise UsageError(f"{where} was made with tokenizer sha256 {src.tokenizer_sha256[:12]}…, but "
                         f"--tokenizer {tokenizer.path} is {tokenizer.sha256[:12]}…; pass the matching one")
    if tokenizer.vocab_size > src.config.vocab_size:
        raise UsageError(f"--tokenizer {tokenizer.path} has {tokenizer.vocab_size} pieces but {where} embeds "
                         f"only {src.config.vocab_size}; it was not trained with this tokenizer")
    return tokenizer.sha256


def pack_source(src: ModelSource, opts: PackOptions, tokenizer_sha256: str, *, calib_data: Path | None = None,
                calib: CalibConfig | None = None, plan=None, fill: bool = False, planner=None,
                progress: bool = True) -> PackResult:
    """Pack a pgolf source; `calib_data` (training shards) enables GPTQ and the planner (quant/pipeline.py)."""
    if src.family != "pgolf":
        raise UsageError(f"{src.provenance.get('file')}: family {src.family!r} is packed by "
                         f"quant.pack.pack_checkpoint_file, not here")
    calib = calib or CalibConfig()
    windows = joint = None
    if calib_data is not None:
        windows, joint = calibration_sets(Path(calib_data), calib, PGOLF_DEFAULT_SEQ_LEN, src.config.vocab_size,
                                          progress)
    tensors = {k: v.detach().float().numpy() for k, v in src.tensors.items()}
    return pack_model(src.model(), tensors, pgolf_body(src, tokenizer_sha256), opts, windows=windows,
                      joint_windows=joint, plan=plan, fill=fill, planner=planner, progress=progress,
                      batch_size=calib.batch_size)


def pack_pgolf_file(path: Path, out_path: Path, opts: PackOptions, pgolf: PGolfOptions = NO_PGOLF_OPTIONS,
                    tokenizer: Tokenizer | None = None, *, calib: CalibConfig | None = None, plan=None,
                    fill: bool = False, planner=None, progress: bool = True) -> tuple[PackResult, ModelSource]:
    """Pack a foreign or ingested Parameter Golf checkpoint into one artifact, written atomically.

    Calibration shards: `calib.data`, else the checkpoint's folder when it holds `*_train_*.bin` shards."""
    path, out_path = Path(path), Path(out_path)
    inputs = [path, *checkpoint_paths(path)]
    refuse_same_path(out_path, inputs)
    src = load_source(path, pgolf)
    sha = resolve_tokenizer(src, tokenizer, str(path))
    calib = calib or CalibConfig()
    data = calib.data if calib.data is not None else default_calib_data(path)
    if data is None:
        log("pack: no calibration data (no *_train_*.bin shards beside the checkpoint; pass --calib-data): "
            "scales by data-free clip choice, no GPTQ, no planner", progress)
    result = pack_source(src, opts, sha, calib_data=data, calib=calib, plan=plan, fill=fill, planner=planner,
                         progress=progress)
    write_artifact(out_path, result.data, inputs=inputs)
    return result, src
