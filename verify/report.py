"""Plain-text renderings of verify and demo reports (the JSON forms are the dicts themselves)."""

from __future__ import annotations


def format_verify(rep: dict) -> str:
    what = "artifact" if rep.get("kind", "artifact") == "artifact" else "checkpoint"
    sha = (f" (sha256 {rep['sha256'][:16]}…, trailer sha256 {rep['trailer_sha256'][:16]}…)"
           if rep.get("trailer_sha256") else f" (sha256 {rep['sha256'][:16]}…)" if rep.get("sha256") else "")
    window = (f"sliding windows of {rep['seq_len']}, stride {rep['sliding_window_stride']}"
              if rep.get("sliding_window_stride") else f"non-overlapping windows of {rep.get('seq_len')}")
    lines = [f"{what:<10} {rep['artifact']}{sha}" + ("  [PARTIAL verify: --max-tokens]" if rep.get("partial") else ""),
             f"data       {rep['data']}: {rep['tokens']:,} tokens, {rep['bytes']:,} bytes; {window}",
             f"val_loss   {rep['val_loss']:.4f} nats/token",
             f"val_bpb    {rep['val_bpb']:.4f}",
             f"speed      {rep['tokens_per_second']:,.0f} tokens/s ({rep['seconds']:.2f} s)"]
    lines.extend(format_routing(rep))
    if rep.get("unigram_bpb") is not None:
        lines.append(f"unigram    {rep['unigram_bpb']:.4f} bpb (fitted on the training split)")
    for ref in rep.get("references", [rep["reference"]] if "reference" in rep else []):
        lines.append(f"reference  {ref['val_bpb']:.4f} bpb ({ref['checkpoint']}); gap "
                     f"{rep['val_bpb'] - ref['val_bpb']:+.4f} bpb")
    hp = rep.get("pgolf_hyperparameters")
    if hp:
        lines.append("assumed    " + ", ".join(f"{k} {v['value']}{'' if v['given'] else ' (not recorded: assumed)'}"
                                           for k, v in hp.items()) + " (shapes cannot tell these)")
    lines.extend(f"WARNING    {w}" for w in rep.get("warnings", []))
    return "\n".join(lines)


def format_routing(rep: dict) -> list[str]:
    """The policy lines of a verify report (verify.adaptive.routing_report's keys)."""
    if rep.get("flops_per_token") is None:
        return []
    line = f"policy     {rep['policy']}"
    if rep.get("route_signal"):
        cap = rep.get("route_cap_fraction")
        line += (f": signal {rep['route_signal']}, target fraction {rep['route_fraction_target']:.3f}, cap "
                 f"{'none' if cap is None else f'{cap:.3f}'}; realized {rep['route_fraction_realized']:.4f} "
                 f"({rep['route_selected']:,} of {rep['route_positions']:,} positions), cap refused "
                 f"{rep['cap_bound_count']:,}")
    return [line, f"compute    {rep['flops_per_token'] / 1e6:.3f} MFLOPs/token (analytic)"]


def demo_summary(trained: dict, audit: dict, ver: dict) -> dict:
    """The demo's summary from the train, audit and verify reports."""
    return {"params": trained["params"], "train_steps": trained["steps"], "train_seconds": trained["seconds"],
            "artifact": ver["artifact"], "artifact_bytes": audit["file_bytes"], "total_bytes": audit["total_bytes"],
            "fp_bpb": ver["reference"]["val_bpb"], "artifact_bpb": ver["val_bpb"], "gap_bpb": ver["quantization_gap_bpb"],
            "unigram_bpb": ver["unigram_bpb"], "val_tokens": ver["tokens"], "val_bytes": ver["bytes"],
            "route_signal": ver.get("route_signal"), "route_fraction_target": ver.get("route_fraction_target"),
            "route_fraction_realized": ver.get("route_fraction_realized")}


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
        *([(f"routing         {s['route_signal']} at target {s['route_fraction_target']:.2f}, realized "
           f"{s['route_fraction_realized']:.4f} on validation")] if s.get("route_signal") else []),
    ])


def _ci(d: dict) -> str:
    return f"{d['delta']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"


def format_experiment(rep: dict) -> str:
    """The routing experiment's table (verify/experiment.py): one line per policy."""
    m = rep["meta"]
    lines = [(f"artifact {m['artifact']}: K={m['passes']}, {m['val_tokens']:,} validation tokens in {m['documents']} "
             f"documents, thresholds calibrated on {m['calib_tokens']:,} training tokens; timing on "
             f"{m['time_tokens']:,} tokens, median of {m['time_repeats']}, {m['threads']} thread(s)"),
             (f"{'policy':<26} {'legal':<5} {'val_bpb':>8} {'d vs K [95% CI]':>27} {'d vs K+1 [95% CI]':>27} "
             f"{'frac':>6} {'capref':>6} {'MFLOP/t':>8} {'tok/s':>8} {'eta':>6} {'r':>6} {'r_cpu':>6}")]
    for r in rep["rows"]:
        def num(v, fmt):
            return format(v, fmt) if v is not None else "-"
        lines.append(f"{r['policy']:<26} {'yes' if r['legal'] else 'NO':<5} {r['val_bpb']:>8.4f} "
                     f"{_ci(r['delta_vs_uniform_k']):>27} {_ci(r['delta_vs_uniform_k1']):>27} "
                     f"{r['route_fraction_realized']:>6.3f} {r['cap_bound_count']:>6} "
                     f"{r['flops_per_token'] / 1e6:>8.3f} {num(r['tokens_per_second'], ',.0f'):>8} "
                     f"{num(r['capture_efficiency'], '.3f'):>6} {num(r['overhead_ratio'], '.2f'):>6} "
                     f"{num(r['overhead_ratio_cpu'], '.2f'):>6}")
    lines.append("oracle rows read the target: ILLEGAL, upper bounds only. r = (T_adapt - T_K) / (f (T_K+1 - T_K)).")
    return "\n".join(lines)
