"""Plain-text renderings of verify and demo reports (the JSON forms are the dicts themselves)."""

from __future__ import annotations


def format_verify(rep: dict) -> str:
    lines = [f"artifact   {rep['artifact']} (sha256 {rep['sha256'][:16]}…)",
             f"data       {rep['data']}: {rep['tokens']:,} tokens, {rep['bytes']:,} bytes",
             f"val_loss   {rep['val_loss']:.4f} nats/token",
             f"val_bpb    {rep['val_bpb']:.4f}",
             f"speed      {rep['tokens_per_second']:,.0f} tokens/s ({rep['seconds']:.2f} s)"]
    if rep.get("unigram_bpb") is not None:
        lines.append(f"unigram    {rep['unigram_bpb']:.4f} bpb (fitted on the training split)")
    if "reference" in rep:
        lines.append(f"reference  {rep['reference']['val_bpb']:.4f} bpb (float checkpoint); quantization gap "
                     f"{rep['quantization_gap_bpb']:+.4f} bpb")
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
