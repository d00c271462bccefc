"""The byte-budget audit: where every byte of an artifact went, and how far the total is from the cap.

Every number comes from the file: section sizes from the section table, header/manifest/trailer from the
layout; they add up exactly to the file size. Code bytes come from packer.code_bytes. Per tensor it also
measures what its codes carry: `entropy_bits_per_param`, the order-0 entropy of its `codes` section's
elements (decoded from the file; an NF4 byte holds two codes, so its symbols are those bytes) per
parameter, and `model_bytes`, the bytes an entropy-coded section spends on its model (histograms,
parameters: packer.entropy.codec.describe_section; None for codecs without a separable model).
Must not import torch.
"""

from __future__ import annotations

import math
from pathlib import Path

from common.atomic import check_output, looks_like_png_we_wrote
from packer.code_bytes import CodeCount, count_code
from packer.entropy.codec import describe_section
from packer.entropy.models import order0_entropy_bits
from packer.reader import Artifact, read_artifact

GROUP_ORDER = ("embedding", "attention", "mlp", "control", "other sections", "manifest and headers")


def tensor_group(name: str) -> str:
    if name.startswith("tok_emb") or name.endswith("lm_head.weight"):
        return "embedding"
    if ".attn." in name and not name.endswith("norm.weight"):
        return "attention"
    if ".mlp." in name and not name.endswith("norm.weight"):
        return "mlp"
    return "control"


def audit_artifact(art: Artifact, code: CodeCount, budget_bytes: int) -> dict:
    lay = art.layout
    sections = [{"name": "header", "kind": "structure", "bytes": lay.header_bytes},
                {"name": "manifest", "kind": "structure", "bytes": lay.manifest_bytes,
                 "raw_bytes": lay.manifest_json_bytes}]
    sections += [{"name": s.name, "kind": "payload", "codec": s.codec, "bytes": s.stored_bytes,
                  "raw_bytes": s.raw_bytes} for s in art.sections]
    sections.append({"name": "trailer (sha256)", "kind": "structure", "bytes": lay.trailer_bytes})

    tensors, used = [], set()
    groups = {g: 0 for g in GROUP_ORDER}
    for t in art.manifest["tensors"]:
        params = math.prod(t["shape"])
        if "alias_of" in t:
            tensors.append({"name": t["name"], "format": f"alias of {t['alias_of']}", "params": params,
                            "bytes": 0, "bits_per_param": 0.0, "group": tensor_group(t["name"]),
                            "entropy_bits_per_param": None, "model_bytes": None})
            continue
        nbytes = sum(art.section(sec).stored_bytes for sec in t["sections"].values())
        used.update(t["sections"].values())
        group = tensor_group(t["name"])
        groups[group] += nbytes
        tensors.append({"name": t["name"], "format": t["format"], "scale": t.get("scale"), "params": params,
                        "bytes": nbytes,
                        "bits_per_param": 8.0 * nbytes / params if params else 0.0, "group": group,
                        "codecs": sorted({art.section(s).codec for s in t["sections"].values()}),
                        **_code_statistics(art, t, params)})
    groups["other sections"] = sum(s.stored_bytes for s in art.sections if s.name not in used)
    groups["manifest and headers"] = lay.header_bytes + lay.manifest_bytes + lay.trailer_bytes
    total = lay.file_bytes + code.compressed_bytes
    return {
        "fits": total <= budget_bytes,
        "file_bytes": lay.file_bytes,
        "code_bytes": code.compressed_bytes,
        "code": {"files": list(code.files), "raw_bytes": code.raw_bytes, "method": code.method},
        "total_bytes": total,
        "budget_bytes": budget_bytes,
        "headroom_bytes": budget_bytes - total,
        "params": sum(t["params"] for t in tensors if not t["format"].startswith("alias")),
        "groups": [{"name": g, "bytes": groups[g]} for g in GROUP_ORDER],
        "sections": sections,
        "tensors": tensors,
        "routing": art.manifest.get("routing"),
        "sha256": art.file_sha256, "trailer_sha256": art.trailer_sha256,
        "format_version": f"{art.version[0]}.{art.version[1]}",
        "manifest": {"stored_bytes": lay.manifest_bytes, "json_bytes": lay.manifest_json_bytes},
    }


def _code_statistics(art: Artifact, entry: dict, params: int) -> dict:
    """entropy_bits_per_param of the tensor's codes (None without a codes section) and model_bytes of its
    sections (None when no section's codec keeps a separable model)."""
    codes = entry["sections"].get("codes")
    entropy = (order0_entropy_bits(art.array(codes)) / params if codes is not None and params else None)
    models = [describe_section(art.section(s).codec, art.stored(s), art.section(s).params,
                               art.section(s).raw_bytes)["model_bytes"] for s in entry["sections"].values()]
    known = [m for m in models if m is not None]
    return {"entropy_bits_per_param": entropy, "model_bytes": sum(known) if known else None}


def audit_file(path: Path, code_files: list[Path] | None, budget_bytes: int, plot: Path | None = None,
               force: bool = False) -> dict:
    """The audit job: read and validate the artifact at `path`, count the code (named files, or golfpack's
    runtime modules), audit both against the budget, and draw the chart to `plot` (checked first)."""
    if plot is not None:
        check_output(plot, [Path(path), *(code_files or [])], force, looks_like_png_we_wrote, "a golfpack chart")
    rep = audit_artifact(read_artifact(path), count_code(code_files or None), budget_bytes)
    if plot is not None:
        from packer.audit_plot import plot_audit  # matplotlib only when a chart is asked for

        rep["plot"] = str(plot_audit(rep, plot))
    return rep


def format_audit(rep: dict) -> str:
    """Human-readable table of an audit report."""
    lines = [(f"{'tensor':<34} {'format':<16} {'scale':<12} {'params':>10} {'bytes':>10} {'bits/param':>10} "
             f"{'entropy':>8} {'model B':>8}")]
    for t in rep["tensors"]:
        ent = "-" if t.get("entropy_bits_per_param") is None else f"{t['entropy_bits_per_param']:.3f}"
        mod = "-" if t.get("model_bytes") is None else f"{t['model_bytes']:,}"
        lines.append(f"{t['name']:<34} {t['format']:<16} {t.get('scale') or '-':<12} {t['params']:>10,} "
                     f"{t['bytes']:>10,} {t['bits_per_param']:>10.3f} {ent:>8} {mod:>8}")
    lines.append("")
    lines.append(f"{'group':<34} {'bytes':>10}")
    for g in rep["groups"]:
        lines.append(f"{g['name']:<34} {g['bytes']:>10,}")
    m = rep.get("manifest")
    if m:
        lines.append(f"  manifest (format {rep['format_version']}): {m['stored_bytes']:,} B stored, "
                     f"{m['json_bytes']:,} B as JSON")
    lines.append("")
    lines.append(f"file                               {rep['file_bytes']:>10,}")
    lines.append(f"code ({rep['code']['method']}, {len(rep['code']['files'])} files){'':<10}"
                 f"{rep['code_bytes']:>10,}")
    lines.append(f"total                              {rep['total_bytes']:>10,}")
    lines.append(f"budget                             {rep['budget_bytes']:>10,}")
    lines.append(f"headroom                           {rep['headroom_bytes']:>10,}")
    if not rep["fits"]:
        lines.append(f"over budget by {rep['total_bytes'] - rep['budget_bytes']:,} B")
    lines.extend(format_routing(rep.get("routing")))
    return "\n".join(lines)


def format_routing(r: dict | None) -> list[str]:
    """The routing rule in words: which signal the calibration chose, and by how much it won."""
    if not isinstance(r, dict):
        return []
    if r.get("policy") != "adaptive":
        if "passes" not in r:        # a model without passes (Parameter Golf's GPT): one forward, no routing
            return ["", f"routing    {r.get('policy')}: one forward pass for every position"]
        return ["", f"routing    {r.get('policy')}: {r.get('passes')} passes for every position"]
    cap = r.get("cap_fraction")
    head = (f"routing    adaptive: signal {r.get('signal')} (sign {r.get('sign', 1):+d}), threshold "
            f"{r.get('threshold'):.6g}, target fraction {r.get('target_fraction'):.3f}, cap "
            f"{'none' if cap is None else f'{cap:.3f}'}, K={r.get('passes')} + {r.get('extra_passes', 1)} "
            f"extra pass; calibrated on {r.get('calib_tokens', 0):,} training tokens")
    lines = ["", head]
    sel = r.get("selection") or []
    if len(sel) >= 2:
        best, second = sel[0], sel[1]
        lines.append(f"           won on capture efficiency eta {best['capture_efficiency']:.4f} over the runner-up "
                     f"{second['signal']} ({second['capture_efficiency']:.4f}), margin "
                     f"{best['capture_efficiency'] - second['capture_efficiency']:+.4f}; all: "
                     + ", ".join(f"{x['signal']} {x['capture_efficiency']:.3f}" for x in sel))
    elif sel:
        lines.append(f"           chosen by the user; capture efficiency eta {sel[0]['capture_efficiency']:.4f}")
    return lines
