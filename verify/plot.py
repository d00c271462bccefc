"""The experiment's picture: validation bpb against measured time per token (PNG, matplotlib Agg).

The uniform frontier joins uniform K and uniform K+1; each signal is a curve over its fractions; controls
are dashed and the oracles dotted (illegal, upper bounds). Must not compute anything beyond plotting.
"""

from __future__ import annotations

import io
from pathlib import Path

from common.atomic import write_bytes_atomic


def plot_experiment(result: dict, path: Path, time_key: str = "us_per_token_cpu") -> Path:
    """Write the PNG to `path` (atomically) and return it. Time is thread CPU time by default (on a shared
    CPU the wall clock mostly measures the other processes); time_key="us_per_token_wall" plots wall clock."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get(time_key) is not None]
    if not rows:
        raise ValueError("no timed rows to plot (run the experiment with timing on)")
    fig, ax = plt.subplots(figsize=(8.5, 5.5), dpi=120)
    uni = sorted((r for r in rows if r["signal"] is None), key=lambda r: r[time_key])
    ax.plot([r[time_key] for r in uni], [r["val_bpb"] for r in uni], "k-o", lw=2.2, ms=7,
            label="uniform K -> K+1 (frontier)", zorder=5)
    for r in uni:
        ax.annotate(r["policy"], (r[time_key], r["val_bpb"]), textcoords="offset points", xytext=(6, 6),
                    fontsize=8)
    signals = sorted({r["signal"] for r in rows if r["signal"] is not None})
    cmap = plt.get_cmap("tab20")
    for i, s in enumerate(signals):
        pts = sorted((r for r in rows if r["signal"] == s), key=lambda r: r["fraction"])
        first = pts[0]
        style = ":" if first["oracle"] else ("--" if first["control"] else "-")
        label = s + (" (ILLEGAL oracle)" if first["oracle"] else " (control)" if first["control"] else "")
        ax.plot([r[time_key] for r in pts], [r["val_bpb"] for r in pts], style, marker="o", ms=4,
                color=cmap(i % 20), label=label)
    meta = result.get("meta", {})
    ax.set_xlabel(f"measured time per token (µs, {'wall' if 'wall' in time_key else 'CPU'}; median of "
                  f"{meta.get('time_repeats', '?')} runs, {meta.get('threads', '?')} thread(s))")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(f"Adaptive depth: one extra pass for routed positions (K={meta.get('passes', '?')}, "
                 f"fractions {sorted({r['fraction'] for r in rows if r['fraction']})})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": "golfpack"})
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return path
