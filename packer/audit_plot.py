"""The audit as a picture (PNG): bytes per group stacked against the budget with the headroom marked, and each
tensor's stored bits per parameter beside the order-0 entropy of its codes. Reads only an audit report
(packer/audit.py); matplotlib with the non-interactive Agg backend. Must not import torch.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from common.atomic import write_bytes_atomic


def plot_audit(rep: dict, path: Path) -> Path:
    """Write the two-panel audit chart of report `rep` to `path` (atomically); returns the path."""
    groups = [g for g in rep["groups"] if g["bytes"] > 0] + [{"name": f"code ({rep['code']['method']})",
                                                                "bytes": rep["code_bytes"]}]
    tensors = [t for t in rep["tensors"] if t["bytes"] > 0]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 4 + 0.22 * len(tensors)),
                                   gridspec_kw={"height_ratios": [1, max(2, 0.22 * len(tensors))]})
    left = 0
    colors = plt.get_cmap("tab10").colors
    for i, g in enumerate(groups):
        ax1.barh([0], [g["bytes"]], left=left, color=colors[i % len(colors)], label=f"{g['name']} {g['bytes']:,} B")
        left += g["bytes"]
    budget = rep["budget_bytes"]
    ax1.axvline(budget, color="black", linewidth=2)
    head = rep["headroom_bytes"]
    label = f"headroom {head:,} B" if head >= 0 else f"over budget by {-head:,} B"
    ax1.annotate(f"budget {budget:,} B; {label}", xy=(budget, 0.45), xytext=(-4, 0), textcoords="offset points",
                 ha="right", va="bottom", fontsize=9)
    if head > 0:
        ax1.barh([0], [head], left=left, color="none", edgecolor="gray", hatch="//")
    ax1.set_xlim(0, max(budget, left) * 1.02)
    ax1.set_yticks([])
    ax1.set_xlabel("bytes (artifact file + counted code)")
    ax1.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.45), frameon=False)
    ax1.set_title(f"{rep['total_bytes']:,} B of {budget:,} B")
    y = list(range(len(tensors)))
    ax2.barh([v + 0.2 for v in y], [t["bits_per_param"] for t in tensors], height=0.4, label="stored bits/param")
    ent = [t["entropy_bits_per_param"] if t.get("entropy_bits_per_param") is not None else 0.0 for t in tensors]
    ax2.barh([v - 0.2 for v in y], ent, height=0.4, label="order-0 entropy of its codes, bits/param")
    ax2.set_yticks(y)
    ax2.set_yticklabels([f"{t['name']} ({t['format']})" for t in tensors], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("bits per parameter")
    ax2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": "golfpack"})
    plt.close(fig)
    write_bytes_atomic(Path(path), buf.getvalue())
    return Path(path)
