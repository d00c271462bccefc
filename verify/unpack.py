"""The unpack job: an artifact back to a golfpack checkpoint (safetensors + JSON config) holding the dequantized
weights exactly as verify runs them, under the checkpoint's own tensor names.

Any PyTorch or safetensors tool can load the `.safetensors` file; every golfpack command takes the pair. The
JSON records the family and config from the manifest, and in its metadata the tokenizer's sha256, the
routing the artifact runs (so `golfpack verify CKPT` runs the same policy and prints the same val_bpb as
`golfpack verify ART`) and the artifact's sha256. Refuses to write over the artifact. Must not quantize.
"""

from __future__ import annotations

from pathlib import Path

from core.checkpoint import check_checkpoint_outputs, save_checkpoint
from packer.reader import read_artifact
from quant.unpack import build_model


def unpack_job(artifact: Path, out: Path, force: bool = False) -> dict:
    """Write `<out stem>.safetensors` + `.json` from the artifact; returns the report."""
    artifact = Path(artifact)
    st_path, js_path = check_checkpoint_outputs(Path(out), [artifact], force)
    art = read_artifact(artifact)
    model = build_model(art)
    m = art.manifest
    meta = {"tokenizer_sha256": m["tokenizer"].get("sha256"), "routing": m["routing"],
            "unpacked_from": {"file": artifact.name, "sha256": art.file_sha256},
            "params": sum(p.numel() for p in model.parameters())}
    if "source" in m:
        meta["source"] = m["source"]
    save_checkpoint(st_path, model, model.cfg, meta, family=m["model"]["family"])
    return {"checkpoint": str(st_path), "config": str(js_path), "artifact": str(artifact), "family": m["model"]["family"],
            "tensors": len(model.state_dict()), "params": meta["params"], "artifact_sha256": art.file_sha256,
            "routing": m["routing"]}


def format_unpack(rep: dict) -> str:
    return (f"wrote {rep['checkpoint']} + {Path(rep['config']).name}: {rep['tensors']} tensors, {rep['params']:,} "
            f"params ({rep['family']}), from {rep['artifact']}")
