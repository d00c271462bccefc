"""Benchmark: golfpack's quantization and budget planner against the schemes Parameter Golf entries use.

On one checkpoint, with the same validation tokens and the same scoring (verify.job.verify_job; a peer's
dequantized weights are scored by writing them into an fp32 golfpack artifact, so every row goes through the
same verify path):
  (a) baseline  — Parameter Golf's train_gpt.py export: int8 per row, clip at the 99.99984th percentile of
                  |w|, scale = clip/127 floored at 1/127, fp16 scales, tensors of <= 65,536 elements kept as
                  fp16 (fp32 for its control-tensor name patterns), torch.save to bytes, zlib level 9;
  (b) records   — int<b> per row for matrices (int8 embedding, or int<b> too), scales by the records' 5-point
                  percentile search {0.999, 0.9995, 0.9999, 0.99999, 1.0} (the one with the least tensor MSE)
                  or by GPTQ on those scales; serialized with torch.save + zstd-22, or as raw arrays with
                  multi-byte values byte-shuffled + brotli-11. Applied to every matrix (the records' "keep
                  tensors of <= 65,536 elements in fp16" rule would keep most of a small model's matrices fp16);
                  no scale floor (the strongest form of the peer);
  (c) golfpack  — the planner at each peer's bytes (artifact file <= the peer's compressed bytes; the counted
                  code is reported beside it) and at budgets of 3, 4, 5, 6, 8 bits per parameter.
Also: GPTQ vs round-to-nearest (and clip search) at the same bits; today's default plan vs the new default.
Calibration (GPTQ Hessians, sensitivities) uses TRAINING shards only.

    .venv/bin/python bench/bench_quant.py --ckpt /tmp/q/demo/pydocs_recurrent --data /tmp/q/demo \\
        --tokenizer /tmp/q/demo/pydocs_1024_bpe.model --work /tmp/q/bench
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import zlib
from pathlib import Path

import brotli
import numpy as np
import torch
import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.ingest import dequantize_int8_clean
from core.sources import PGolfOptions, load_source
from core.tokenizer import Tokenizer
from quant import formats
from quant import primitives as P
from quant.assemble import pack_tensors
from quant.calibrate import CalibConfig
from quant.gptq import GPTQConfig, gptq_codes
from quant.options import PackOptions, is_control, is_embedding
from quant.pack_job import PackJob, PackRequest
from quant.planner import PlannerConfig
from verify.job import VerifyRequest, verify_job

# --- (a) the baseline export, as train_gpt.py writes it ------------------------------------------------------
PG_KEEP_FLOAT_MAX_NUMEL = 65_536
PG_CLIP_Q = 99.99984 / 100.0
PG_CONTROL_PATTERNS = ("attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes",
                       "q_gain", "skip_weight", "skip_weights")


def baseline_export(state: dict[str, torch.Tensor]) -> bytes:
    quantized, scales, dtypes, passthrough, orig, qmeta = {}, {}, {}, {}, {}, {}
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        if t.numel() <= PG_KEEP_FLOAT_MAX_NUMEL:
            if any(p in name for p in PG_CONTROL_PATTERNS):
                passthrough[name] = t.float().contiguous()
            else:
                orig[name] = str(t.dtype).removeprefix("torch.")
                passthrough[name] = t.to(torch.float16).contiguous()
            continue
        t32 = t.float()
        if t32.ndim == 2:
            clip = torch.quantile(t32.abs(), PG_CLIP_Q, dim=1)
            clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
            scale = (clip / 127.0).clamp_min(1.0 / 127.0)
            quantized[name] = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127).to(torch.int8)
            scales[name] = scale.to(torch.float16).contiguous()
            qmeta[name] = {"scheme": "per_row", "axis": 0}
        else:
            clip = float(torch.quantile(t32.abs().flatten(), PG_CLIP_Q).item())
            scale = torch.tensor(clip / 127.0 if clip > 0 else 1.0, dtype=torch.float32)
            quantized[name] = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -127, 127).to(torch.int8)
            scales[name] = scale
        dtypes[name] = str(t.dtype).removeprefix("torch.")
    obj = {"__quant_format__": "int8_clean_per_row_v1", "quantized": quantized, "scales": scales,
           "dtypes": dtypes, "passthrough": passthrough}
    if qmeta:
        obj["qmeta"] = qmeta
    if orig:
        obj["passthrough_orig_dtypes"] = orig
    buf = io.BytesIO()
    torch.save(obj, buf)
    return zlib.compress(buf.getvalue(), level=9)


def baseline_restore(blob: bytes) -> dict[str, np.ndarray]:
    obj = torch.load(io.BytesIO(zlib.decompress(blob)), weights_only=True)
    tensors, _ = dequantize_int8_clean(obj, "baseline export")
    return {k: v.float().numpy() for k, v in tensors.items()}


# --- (b) the records' scheme ---------------------------------------------------------------------------------
RECORD_PCTS = (0.9990, 0.9995, 0.9999, 0.99999, 1.0)


def records_scales(w: np.ndarray, bits: int) -> np.ndarray:
    """The records' search: per tensor, the percentile whose per-row clip gives the least MSE (fp16 scales)."""
    t32 = torch.from_numpy(w)
    best, best_err = None, float("inf")
    for pct in RECORD_PCTS:
        clip = torch.quantile(t32.abs(), pct, dim=1) if pct < 1.0 else t32.abs().amax(dim=1)
        s = P.scales_for_clip(clip.numpy(), bits)
        err = float(np.mean((w - P.dequantize(P.quantize_with_scales(w, s, bits), s)) ** 2))
        if err < best_err:
            best, best_err = s, err
    return best


def records_quantize(tensors: dict[str, np.ndarray], bits: int, emb_bits: int, method: str,
                     hessians: dict) -> tuple[dict, dict, dict]:
    codes, scales, passthrough = {}, {}, {}
    for name, w in tensors.items():
        if is_control(name, w.shape):
            passthrough[name] = w.astype(np.float16)
            continue
        b = emb_bits if is_embedding(name) else bits
        rows = w.reshape(w.shape[0], -1)
        s = records_scales(rows, b)
        h = hessians.get(name)
        if method == "gptq" and h is not None and h.matrix.shape == (rows.shape[1],) * 2:
            q = gptq_codes(rows, h.matrix, s, b, None, GPTQConfig())
        else:
            q = P.quantize_with_scales(rows, s, b)
        codes[name], scales[name] = q, s
    return codes, scales, passthrough


def records_restore(codes: dict, scales: dict, passthrough: dict, shapes: dict) -> dict[str, np.ndarray]:
    out = {n: P.dequantize_rows(codes[n], scales[n]).reshape(shapes[n]) for n in codes}
    out.update({n: v.astype(np.float32) for n, v in passthrough.items()})
    return out


def serialize_torch_zstd(codes: dict, scales: dict, passthrough: dict) -> bytes:
    obj = {"w": {**{n: torch.from_numpy(c) for n, c in codes.items()},
                 **{n: torch.from_numpy(v) for n, v in passthrough.items()}},
           "s": {n: torch.from_numpy(s) for n, s in scales.items()}}
    buf = io.BytesIO()
    torch.save(obj, buf)
    return zstandard.ZstdCompressor(level=22).compress(buf.getvalue())


def byte_shuffle(a: np.ndarray) -> bytes:
    """Bytes of a little-endian array grouped by significance (all low bytes, then all high bytes, ...)."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint8).reshape(-1, a.dtype.itemsize).T.tobytes()


def serialize_shuffle_brotli(codes: dict, scales: dict, passthrough: dict) -> bytes:
    header, parts = [], []
    for kind, table in (("codes", codes), ("scales", scales), ("float", passthrough)):
        for n in sorted(table):
            a = table[n]
            header.append([kind, n, a.dtype.str, list(a.shape)])
            parts.append(byte_shuffle(a))
    head = json.dumps(header, separators=(",", ":")).encode()
    return brotli.compress(len(head).to_bytes(4, "little") + head + b"".join(parts), quality=11)


# --- scoring -------------------------------------------------------------------------------------------------
class Scorer:
    def __init__(self, body: dict, data: Path, tokenizer: Path, work: Path) -> None:
        self.body, self.data, self.tokenizer, self.work = body, data, tokenizer, work
        self.n = 0

    def artifact(self, data: bytes, label: str) -> float:
        self.n += 1
        path = self.work / f"{self.n:03d}_{label}.gpk"
        path.write_bytes(data)
        return verify_job(VerifyRequest(path, (self.data,), self.tokenizer, progress=False))["val_bpb"]

    def tensors(self, tensors: dict[str, np.ndarray], label: str) -> float:
        """A peer's dequantized weights, scored through an fp32 golfpack artifact (exact values)."""
        opts = PackOptions(embed_format="fp32", matrix_format="fp32", control_format="fp32", codec="raw",
                           budget_bytes=10**12, dedup=False)
        return self.artifact(pack_tensors(tensors, self.body, opts).data, label)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--data", type=Path, help="shard folder: *_train_* calibrate, *_val_* score")
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/golfpack_bench_quant"))
    ap.add_argument("--calib-tokens", type=int, default=8192)
    ap.add_argument("--joint-tokens", type=int, default=65_536, help="the planner's joint check (0: calib set)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quant.json")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a busy box)")
    ap.add_argument("--mlp-power", type=int, default=None, help="Parameter Golf checkpoints: ReLU power")
    ap.add_argument("--bits", default="3,4,5,6,8", help="peer bit widths (also the bits-per-parameter budgets)")
    ap.add_argument("--render", type=Path, default=None, help="only re-render a results JSON (markdown + PNG)")
    args = ap.parse_args()
    if args.render is not None:
        out = json.loads(args.render.read_text())
        print(markdown(out))
        plot(out, args.render.with_suffix(".png"))
        return
    if not (args.ckpt and args.data and args.tokenizer):
        ap.error("--ckpt, --data and --tokenizer are required (unless --render)")
    bit_list = [int(b) for b in args.bits.split(",")]
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    source = load_source(args.ckpt, PGolfOptions(mlp_power=args.mlp_power))
    # the pack job's own session: the checkpoint's unseen tokens (its hold-out tail, when it records one)
    job = PackJob(source, PackRequest(options=PackOptions(budget_bytes=10**12), route=None, fill=True,
                                      calib=CalibConfig(args.data, args.calib_tokens, args.joint_tokens),
                                      tokenizer=Tokenizer.load(args.tokenizer)))
    session = job.packer
    state = {k: v.detach().float().contiguous() for k, v in source.tensors.items()}
    tensors = {k: v.numpy().copy() for k, v in state.items()}
    shapes = {k: v.shape for k, v in tensors.items()}
    params = sum(v.size for v in tensors.values())
    sc = Scorer(session.body, args.data, args.tokenizer, args.work)
    log = lambda m: print(f"[{time.perf_counter() - t_start:7.1f}s] {m}", file=sys.stderr, flush=True)

    fp_bpb = sc.tensors(tensors, "fp32")
    log(f"fp32 reference {fp_bpb:.4f} bpb; {params:,} parameters")
    code_bytes = session.code.compressed_bytes
    hessians = session.hessians

    peers = []
    blob = baseline_export(state)
    peers.append({"peer": "baseline int8 (clip 99.99984%, zlib-9)", "family": "baseline", "bits": 8,
                  "bytes": len(blob), "bpb": sc.tensors(baseline_restore(blob), "baseline")})
    log(f"peer baseline: {len(blob):,} B, {peers[-1]['bpb']:.4f} bpb")
    for bits in bit_list:
        for emb_bits in sorted({8, bits}, reverse=True):
            for method in ("pct5", "gptq"):
                q, s, p = records_quantize(tensors, bits, emb_bits, method, hessians)
                bpb = sc.tensors(records_restore(q, s, p, shapes), f"records_{bits}_{emb_bits}_{method}")
                for codec, ser in (("torch.save+zstd-22", serialize_torch_zstd),
                                   ("shuffle+brotli-11", serialize_shuffle_brotli)):
                    nbytes = len(ser(q, s, p))
                    peers.append({"peer": f"records int{bits} (emb int{emb_bits}), {method}, {codec}",
                                  "family": "records", "bits": bits, "emb_bits": emb_bits, "method": method,
                                  "codec": codec, "bytes": nbytes, "bpb": bpb})
                log(f"peer records int{bits}/emb{emb_bits} {method}: {bpb:.4f} bpb, {peers[-2]['bytes']:,} / "
                    f"{peers[-1]['bytes']:,} B")

    cfg = PlannerConfig()
    golf: dict[int, dict] = {}

    def golfpack_at(file_budget: int, label: str) -> dict:
        if file_budget not in golf:
            res = job.result(file_budget + code_bytes)
            golf[file_budget] = {"file_budget_bytes": file_budget, "budget_bytes": file_budget + code_bytes,
                                 "file_bytes": res.file_bytes, "total_bytes": res.total_bytes,
                                 "fill": res.total_bytes / (file_budget + code_bytes),
                                 "bpb": sc.artifact(res.data, f"golfpack_{label}"),
                                 "predicted_dloss_nats": res.report.get("predicted_dloss_nats"),
                                 "formats": {n: f"{f}/{res.scales.get(n, '-')}" for n, f in res.plan.items()}}
            log(f"golfpack at {file_budget:,} B file: {res.file_bytes:,} B, {golf[file_budget]['bpb']:.4f} bpb")
        return golf[file_budget]

    # A scheme's two serializations have the same bpb, so golfpack at the smaller one's bytes answers both.
    smallest: dict[tuple, int] = {}
    for p in peers:
        key = (p["family"], p["bits"], p.get("emb_bits"), p.get("method"))
        smallest[key] = min(smallest.get(key, p["bytes"]), p["bytes"])
    for p in peers:
        g = golfpack_at(smallest[(p["family"], p["bits"], p.get("emb_bits"), p.get("method"))], f"peer{p['bytes']}")
        p["golfpack_file_bytes"], p["golfpack_bpb"] = g["file_bytes"], g["bpb"]
        p["golfpack_wins"] = bool(g["bpb"] <= p["bpb"] and g["file_bytes"] <= p["bytes"])
    budgets = []
    for bpp in bit_list:
        g = golfpack_at(int(bpp * params / 8), f"{bpp}bpp")
        budgets.append({"bits_per_param": bpp, **g})

    # GPTQ vs RTN (and clip search) at the same bits: every matrix int<b>_row, embedding int8_row.
    ablation = []
    for bits in [b for b in bit_list if b < 8]:
        for method in ("absmax", "clip_search", "gptq"):
            # the method on the block matrices; the int8 embedding takes its best method (a Parameter Golf
            # model's tied head has no Hessian, so GPTQ cannot apply to it there)
            plan = {n: (("int8_row", None) if is_embedding(n) else (f"int{bits}_row", method)
                        if not is_control(n, shapes[n]) else ("fp16", None)) for n in session.stored}
            res = job.result(plan=plan)
            herr = sum(P.hessian_error(tensors[n], formats.decode(e.format, e.arrays, shapes[n]),
                                       hessians[n].matrix) / hessians[n].rows
                       for n, e in res.encoded.items() if n in hessians and not is_embedding(n))
            ablation.append({"bits": bits, "method": method, "file_bytes": res.file_bytes,
                             "block_hessian_error": herr, "bpb": sc.artifact(res.data, f"abl_{bits}_{method}")})
            log(f"ablation int{bits} {method}: H-err {herr:.4g}, {ablation[-1]['bpb']:.4f} bpb")

    defaults = []
    base = {n: ("int8_row" if is_embedding(n) else "fp16" if is_control(n, shapes[n]) else "int6_row")
            for n in session.stored}
    for label, plan in (("today: int8 emb / int6 matrices, absmax", {n: (f, "absmax" if f != "fp16" else None)
                                                                     for n, f in base.items()}),
                        ("new default: same formats, best scale method", {n: (f, None) for n, f in base.items()})):
        res = job.result(plan=plan)
        defaults.append({"plan": label, "file_bytes": res.file_bytes, "total_bytes": res.total_bytes,
                         "scales": sorted(set(res.scales.values())), "bpb": sc.artifact(res.data, "default")})
        log(f"{label}: {res.file_bytes:,} B, {defaults[-1]['bpb']:.4f} bpb")

    out = {"checkpoint": str(args.ckpt), "params": params, "fp32_bpb": fp_bpb, "code_bytes": code_bytes,
           "calibration": session.report["calibration"], "planner": session.measured_options(cfg)[1],
           "peers": peers, "golfpack_budgets": budgets, "gptq_vs_rtn": ablation, "defaults": defaults,
           "seconds": round(time.perf_counter() - t_start, 1), "torch_threads": args.threads}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(markdown(out))
    plot(out, args.out.with_suffix(".png"))


def markdown(r: dict) -> str:
    lines = [(f"Checkpoint {Path(r['checkpoint']).name}: {r['params']:,} parameters, fp32 {r['fp32_bpb']:.4f} "
              f"bpb; golfpack's counted code: {r['code_bytes']:,} B (not in the file bytes below)."), "",
             "| peer | peer bytes | peer bpb | golfpack file bytes | golfpack bpb | golfpack − peer | golfpack ≤ peer |",
             "|---|---:|---:|---:|---:|---:|:---:|"]
    for p in sorted(r["peers"], key=lambda p: p["bytes"]):
        lines.append(f"| {p['peer']} | {p['bytes']:,} | {p['bpb']:.4f} | {p['golfpack_file_bytes']:,} | "
                     f"{p['golfpack_bpb']:.4f} | {p['golfpack_bpb'] - p['bpb']:+.4f} | "
                     f"{'yes' if p['golfpack_wins'] else 'NO'} |")
    wins = sum(p["golfpack_wins"] for p in r["peers"])
    lines += ["", f"golfpack's bpb is <= the peer's at <= the peer's bytes in {wins} of {len(r['peers'])} rows."]
    if r.get("paired"):           # bench/quant_paired.py's intervals for the rows golfpack does not win
        lines += ["", (f"95% paired bootstrap intervals of golfpack − peer (resampling {r['paired']['unit']}; "
                       f"bench/quant_paired.py):"), "",
                  "| peer | peer bytes | peer − fp32 | golfpack − fp32 | golfpack − peer | 95% interval |",
                  "|---|---:|---:|---:|---:|---|"]
        for q in r["paired"]["rows"]:
            lines.append(f"| {q['peer']} | {q['peer_bytes']:,} | {q['peer_bpb'] - q['fp32_bpb']:+.5f} | "
                         f"{q['golfpack_bpb'] - q['fp32_bpb']:+.5f} | {q['delta_bpb']:+.5f} | "
                         f"[{q['ci95'][0]:+.5f}, {q['ci95'][1]:+.5f}] |")
    lines += ["", "| budget (bits/param) | file budget | file bytes | total with code / budget | bpb |",
              "|---:|---:|---:|---:|---:|"]
    for b in r["golfpack_budgets"]:
        lines.append(f"| {b['bits_per_param']} | {b['file_budget_bytes']:,} | {b['file_bytes']:,} | "
                     f"{100 * b['fill']:.2f}% | {b['bpb']:.4f} |")
    lines += ["", "| bits (matrices; emb int8) | scale method | file bytes | block Hessian error | bpb |",
              "|---:|---|---:|---:|---:|"]
    for a in r["gptq_vs_rtn"]:
        lines.append(f"| {a['bits']} | {a['method']} | {a['file_bytes']:,} | {a['block_hessian_error']:.4g} | "
                     f"{a['bpb']:.4f} |")
    lines += ["", "| default plan | file bytes | bpb |", "|---|---:|---:|"]
    for d in r["defaults"]:
        lines.append(f"| {d['plan']} | {d['file_bytes']:,} | {d['bpb']:.4f} |")
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    """Two panels of bpb against bytes: every point, and a zoom on the band near the fp32 model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    pts = sorted({(g["file_bytes"], g["bpb"]) for g in [*r["golfpack_budgets"]]
                  } | {(p["golfpack_file_bytes"], p["golfpack_bpb"]) for p in r["peers"]})
    styles = {("baseline", None): ("s", "tab:red"), ("records", "pct5"): ("^", "tab:blue"),
              ("records", "gptq"): ("v", "tab:green")}
    for ax, zoom in zip(axes, (False, True)):
        ax.plot([x / 1e3 for x, _ in pts], [y for _, y in pts], "o-", color="black", label="golfpack planner")
        for (fam, method), (marker, color) in styles.items():
            sel = [p for p in r["peers"] if p["family"] == fam and p.get("method") == method]
            if sel:
                ax.scatter([p["bytes"] / 1e3 for p in sel], [p["bpb"] for p in sel], marker=marker, color=color,
                           label=f"{fam}{' ' + method if method else ''}", alpha=0.8)
        ax.axhline(r["fp32_bpb"], color="gray", ls="--", lw=1, label="fp32")
        ax.set_xlabel("bytes of the weights file (kB; golfpack: whole artifact, code not included)")
        ax.set_ylabel("verified validation bpb")
        if zoom:
            ax.set_ylim(r["fp32_bpb"] - 0.002, r["fp32_bpb"] + 0.012)
            ax.set_title("near the fp32 model")
        else:
            ax.set_title("bpb versus bytes on the same checkpoint")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
