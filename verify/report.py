"""Plain-text renderings of verify and demo reports (the JSON forms are the dicts themselves)."""

from __future__ import annotations


def format_verify(rep: dict) -> str:
    what = "artifact" if rep.get("kind", "artifact") == "artifact" else "checkpoint"
    sha = f" (sha256 {rep['sha256'][:16]}…)" if rep.get("sha256") else ""
    window = (f"sliding windows of {rep['seq_len']}, stride {rep['sliding_window_stride']}"
              if rep.get("sliding_window_stride") else f"non-overlapping windows of {rep.get('seq_len')}")
    lines = [f"{what:<10} {rep['artifact']}{sha}",
             f"data       {rep['data']}: {rep['tokens']:,} tokens, {rep['bytes']:,} bytes; {window}",
             f"val_loss   {rep['val_loss']:.4f} nats/token",
             f"val_bpb    {rep['val_bpb']:.4f}",
             f"speed      {rep['tokens_per_second']:,.0f} tokens/s ({rep['seconds']:.2f} s)"]
    if rep.get("unigram_bpb") is not None:
        lines.append(f"unigram    {rep['unigram_bpb']:.4f} bpb (fitted on the training split)")
    for ref in rep.get("references", [rep["reference"]] if "reference" in rep else []):
        lines.append(f"reference  {ref['val_bpb']:.4f} bpb ({ref['checkpoint']}); gap "
                     f"{rep['val_bpb'] - ref['val_bpb']:+.4f} bpb")
    return "\n".join(lines)


def format_demo_summary(s: dict) -> str:
    ratio = s["artifact_bpb"] / s["unigram_bpb"] if s.get("unigram_bpb") else float("nan")
    return "\n".join([
        "",
        "== golfpack demo summary ==",
        f"parameters      {s['params']:,} ({s['train_steps']} steps in {s['train_seconds']:.0f} s)",
        f"artifact        {s['artifact']}: {s['artifact_bytes']:,} B (+ code = {s['total_bytes']:,} B counted)",
        f"fp bpb          {s['fp_bpb']:.4f}",
        f"artifact bpb    {s['artifact_bpb']:.4f}  ({ratio:.3f} x unigram)",
        f"gap             {s['gap_bpb']:+.4f} bpb",
        f"unigram bpb     {s['unigram_bpb']:.4f}",
    ])
