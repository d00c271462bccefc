"""Benchmark: golfpack's ANS coder against generic compressors on quantized weights, vs the order-0 bound.

Sets: the real Parameter Golf checkpoints in ../shared/data/pgolf/*/final_model.pt (and any --checkpoint
safetensors file) quantized per row, round-to-nearest at the row absmax with fp16 scales (quant.primitives),
at int8/int6/int5/int4; codes requantized from one width to another (dequantize, then quantize again);
a synthetic heavy-tailed set; and a 16,000,000-code decode timing. Every tensor is its own section, as in
an artifact, for every compressor. Writes bench/results/entropy.json and bench/results/entropy.md.

    .venv/bin/python bench/bench_entropy.py [--checkpoint run.safetensors] [--skip-16m]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from packer import codecs
from packer.entropy import codec as ans_codec
from packer.entropy import models as em
from quant import primitives as P

PGOLF = ROOT / ".." / "shared" / "data" / "pgolf"
MIN_ELEMS = 4096           # 2-D tensors at least this big are quantized; smaller control tensors stay float
WIDTHS = (8, 6, 5, 4)
REQUANT = ((8, 6), (8, 5), (8, 4), (6, 4))


# --- compressors: name -> (encode(codes int8 [R,C], bits) -> bytes, decode(blob, shape, bits) -> codes) -----
def _pack(codes: np.ndarray, bits: int) -> bytes:
    u = (codes.astype(np.int16) + (1 << (bits - 1))).astype(np.uint8).reshape(-1)
    fields = (u[:, None] >> np.arange(bits - 1, -1, -1, dtype=np.uint8)) & 1
    return np.packbits(fields.reshape(-1)).tobytes()


def _unpack(blob: bytes, shape, bits: int) -> np.ndarray:
    n = int(np.prod(shape))
    fields = np.unpackbits(np.frombuffer(blob, np.uint8))[: n * bits].reshape(n, bits)
    u = (fields.astype(np.uint16) << np.arange(bits - 1, -1, -1, dtype=np.uint16)).sum(1)
    return (u.astype(np.int16) - (1 << (bits - 1))).astype(np.int8).reshape(shape)


def _codec(name: str, extra: dict | None = None):
    def params(shape, bits):
        return {"dtype": "int8", "shape": list(shape), "bits": bits, **(extra or {})}

    def enc(codes, bits):
        return codecs.encode(name, codes.tobytes(), params(codes.shape, bits))

    def dec(blob, shape, bits):
        raw = codecs.decode(name, blob, int(np.prod(shape)), params(shape, bits))
        return np.frombuffer(raw, np.int8).reshape(shape)

    return enc, dec


def _lib(comp, decomp):
    return (lambda codes, bits: comp(codes.tobytes()),
            lambda blob, shape, bits: np.frombuffer(decomp(blob), np.int8).reshape(shape))


COMPRESSORS = {
    "bitpack": (_pack, _unpack),
    "zlib-9": _lib(lambda b: zlib.compress(b, 9), zlib.decompress),
    "zstd-22": _codec("zstd"),
    "lzma-9e": _codec("lzma"),
    "brotli-11": _codec("brotli"),
    "brotli-11-shuffle": _codec("brotli-shuffle"),
    "ans": _codec("ans"),
    "ans-speed": _codec("ans", {"prefer": "speed"}),
}
GENERIC = ("zlib-9", "zstd-22", "lzma-9e", "brotli-11", "brotli-11-shuffle")


def scales_bytes(scales: list[np.ndarray]) -> dict:
    """Bytes of the fp16 per-row scales under brotli, brotli-shuffle and ans (byte planes), per tensor."""
    out = {}
    for name in ("brotli", "brotli-shuffle", "ans"):
        out[name] = sum(len(codecs.encode(name, s.tobytes(), {"dtype": "float16", "shape": [s.size]}))
                        for s in scales)
    out["raw"] = sum(s.nbytes for s in scales)
    return out


def left_context_bytes(c: np.ndarray, buckets: int = 8) -> float:
    """Order-0 entropy of each code given the magnitude bucket of its left neighbour (same row), in bytes,
    with no model cost: the most a neighbour-context model of this kind could reach."""
    qmax = max(int(np.abs(c.astype(np.int64)).max()), 1)
    prev = np.abs(np.concatenate([np.zeros((c.shape[0], 1), np.int64), c[:, :-1].astype(np.int64)], 1))
    ctx = np.minimum(prev * buckets // (qmax + 1), buckets - 1)
    return sum(em.order0_entropy_bits(c[ctx == j]) for j in range(buckets)) / 8


def run_set(name: str, tensors: list[tuple[str, np.ndarray]], bits: int, scales: list[np.ndarray]) -> dict:
    n = sum(c.size for _, c in tensors)
    h0 = sum(em.order0_entropy_bits(c) for _, c in tensors) / 8
    row = {"set": name, "bits": bits, "tensors": len(tensors), "codes": n, "order0_bytes": round(h0, 1),
           "left_context_bytes": round(sum(left_context_bytes(c) for _, c in tensors), 1),
           "results": {}, "scales": scales_bytes(scales)}
    for cname, (enc, dec) in COMPRESSORS.items():
        total, t_enc, t_dec, model_bytes, models = 0, 0.0, 0.0, 0, {}
        for tname, c in tensors:
            t0 = time.perf_counter()
            blob = enc(c, bits)
            t1 = time.perf_counter()
            back = dec(blob, c.shape, bits)
            t2 = time.perf_counter()
            if not np.array_equal(back, c):
                raise SystemExit(f"{cname} did not round-trip {tname} in set {name}")
            total += len(blob)
            t_enc += t1 - t0
            t_dec += t2 - t1
            if cname.startswith("ans"):
                d = ans_codec.describe(blob, {"dtype": "int8", "shape": list(c.shape), "bits": bits})
                model_bytes += d["model_bytes"]
                models[d["model"]] = models.get(d["model"], 0) + 1
        res = {"bytes": total, "vs_order0": round(total / h0, 5) if h0 else None,
               "encode_msym_s": round(n / t_enc / 1e6, 2), "decode_msym_s": round(n / t_dec / 1e6, 2)}
        if cname.startswith("ans"):
            res.update(model_bytes=model_bytes, vs_order0_plus_model=round(total / (h0 + model_bytes), 5),
                       models=models)
        row["results"][cname] = res
    best_generic = min(GENERIC, key=lambda k: row["results"][k]["bytes"])
    ans = row["results"]["ans"]
    row["best_generic"] = best_generic
    row["ans_vs_best_generic"] = round(ans["bytes"] / row["results"][best_generic]["bytes"], 5)
    row["ans_vs_brotli_shuffle"] = round(ans["bytes"] / row["results"]["brotli-11-shuffle"]["bytes"], 5)
    row["ans_below_order0_pct"] = round(100 * (1 - ans["bytes"] / h0), 3) if h0 else None
    print(f"{name:34s} n={n:>9} H0={h0:>11.0f} ans={ans['bytes']:>9} best={best_generic}"
          f" {row['results'][best_generic]['bytes']:>9} ratio={row['ans_vs_best_generic']:.4f}", flush=True)
    return row


def quantize_all(weights: list[tuple[str, np.ndarray]], bits: int):
    out, scales = [], []
    for name, w in weights:
        c, s = P.quantize_rows(w, bits)
        out.append((name, c))
        scales.append(s)
    return out, scales


def requantize_all(weights, src: int, dst: int):
    out, scales = [], []
    for name, w in weights:
        c, s = P.quantize_rows(w, src)
        c2, s2 = P.quantize_rows(P.dequantize_rows(c, s), dst)
        out.append((name, c2))
        scales.append(s2)
    return out, scales


def load_pt(path: Path) -> list[tuple[str, np.ndarray]]:
    import torch

    sd = torch.load(path, map_location="cpu", weights_only=True)
    return [(k, v.float().numpy()) for k, v in sd.items() if v.ndim == 2 and v.numel() >= MIN_ELEMS]


def load_safetensors(path: Path) -> list[tuple[str, np.ndarray]]:
    from safetensors.torch import load_file

    sd = load_file(str(path))
    return [(k, v.float().numpy()) for k, v in sd.items() if v.ndim == 2 and v.numel() >= MIN_ELEMS]


def synthetic_heavy(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Student-t (3 dof) weights with log-normal row and column scales: heavy tails, uneven rows/columns."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (r, c) in enumerate([(512, 512), (1024, 256), (256, 1024), (768, 768)]):
        w = rng.standard_t(3, size=(r, c)) * np.exp(0.4 * rng.standard_normal((r, 1))) * \
            np.exp(0.3 * rng.standard_normal((1, c)))
        out.append((f"heavy{i}", (0.02 * w).astype(np.float32)))
    return out


def decode_16m(bits: int = 6) -> dict:
    """Decode timing for 16,000,000 codes (4 tensors of 2000 x 2000) of Gaussian-with-row-spread weights."""
    rng = np.random.default_rng(1)
    res = {"codes": 16_000_000, "bits": bits}
    tensors = []
    for _ in range(4):
        w = rng.standard_normal((2000, 2000)).astype(np.float32) * np.exp(0.3 * rng.standard_normal((2000, 1)))
        tensors.append(P.quantize_rows(w.astype(np.float32), bits)[0])
    for cname in ("ans", "ans-speed", "brotli-11", "zstd-22"):
        enc, dec = COMPRESSORS[cname]
        t0 = time.perf_counter()
        blobs = [enc(c, bits) for c in tensors]
        t1 = time.perf_counter()
        backs = [dec(b, c.shape, bits) for b, c in zip(blobs, tensors)]
        t2 = time.perf_counter()
        if not all(np.array_equal(a, c) for a, c in zip(backs, tensors)):
            raise SystemExit(f"{cname} failed to round-trip the 16M set")
        res[cname] = {"bytes": sum(map(len, blobs)), "encode_s": round(t1 - t0, 2), "decode_s": round(t2 - t1, 2)}
        print(f"16M {cname}: {res[cname]}", flush=True)
    res["order0_bytes"] = round(sum(em.order0_entropy_bits(c) for c in tensors) / 8, 1)
    return res


def markdown(report: dict) -> str:
    cols = list(COMPRESSORS)
    lines = ["# Entropy coding benchmark", "",
             (f"Machine: {report['machine']}. Every tensor is one section; bytes are totals over a set's "
              "tensors (codes only; scales below). `H0` = sum over tensors of the per-tensor order-0 entropy. "
              "`ans/(H0+model)` counts the ANS model bytes (histograms, parameters) on the bound's side."), "",
             ("`H(x|left)`: entropy given the left neighbour's magnitude (8 buckets), no model cost — the bound "
              "of a neighbour-context model, for comparison."), "",
             "| set | codes | H0 bytes | H(x|left) | " + " | ".join(cols) + " | ans/best generic |"
             " ans/brotli-shuffle | ans/(H0+model) | ans vs H0 |",
             "|" + "---|" * (len(cols) + 8)]
    for r in report["sets"]:
        cells = [f"{r['results'][c]['bytes']:,}" for c in cols]
        a = r["results"]["ans"]
        lines.append(f"| {r['set']} | {r['codes']:,} | {r['order0_bytes']:,.0f} | {r['left_context_bytes']:,.0f} | "
                     + " | ".join(cells) +
                     f" | {r['ans_vs_best_generic']:.4f} ({r['best_generic']}) | {r['ans_vs_brotli_shuffle']:.4f}"
                     f" | {a['vs_order0_plus_model']:.4f} | {-r['ans_below_order0_pct']:+.2f}% |")
    lines += ["", "Speed (million codes per second, encode / decode, summed over each set's tensors):", "",
              "| set | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for r in report["sets"]:
        lines.append(f"| {r['set']} | " + " | ".join(
            f"{r['results'][c]['encode_msym_s']} / {r['results'][c]['decode_msym_s']}" for c in cols) + " |")
    lines += ["", "fp16 per-row scales, bytes per set (raw / brotli / brotli-shuffle / ans byte planes):", ""]
    for r in report["sets"]:
        s = r["scales"]
        lines.append(f"- {r['set']}: {s['raw']} / {s['brotli']} / {s['brotli-shuffle']} / {s['ans']}")
    lines += ["", "Models ans chose (tensor count): " + "; ".join(
        f"{r['set']}: " + ", ".join(f"{k} {v}" for k, v in sorted(r['results']['ans']['models'].items()))
        for r in report["sets"])]
    if report.get("decode_16m"):
        d = report["decode_16m"]
        lines += ["", (f"16,000,000 int{d['bits']} codes (4 x 2000x2000, Gaussian with log-normal row spread), "
                       f"order-0 {d['order0_bytes']:,.0f} bytes:"), "",
                  "| coder | bytes | encode s | decode s |", "|---|---|---|---|"]
        for k in ("ans", "ans-speed", "brotli-11", "zstd-22"):
            lines.append(f"| {k} | {d[k]['bytes']:,} | {d[k]['encode_s']} | {d[k]['decode_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", default=[], help="a safetensors checkpoint to add")
    ap.add_argument("--skip-16m", action="store_true", help="skip the 16,000,000-code timing")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "entropy.json"))
    args = ap.parse_args()
    sources = [(p.parent.name, load_pt(p)) for p in sorted(PGOLF.glob("*/final_model.pt"))]
    sources += [(Path(p).stem, load_safetensors(Path(p))) for p in args.checkpoint]
    if not sources:
        print(f"no checkpoints found under {PGOLF}; running the synthetic sets only")
    report = {"machine": f"{platform.machine()}, {platform.python_version()}, numpy {np.__version__}",
              "sets": []}
    for src, weights in sources:
        for bits in WIDTHS:
            report["sets"].append(run_set(f"{src} int{bits}", *_pair(quantize_all(weights, bits), bits)))
        for a, b in REQUANT:
            report["sets"].append(run_set(f"{src} int{a}->int{b}", *_pair(requantize_all(weights, a, b), b)))
    heavy = synthetic_heavy()
    for bits in (6, 4):
        report["sets"].append(run_set(f"synthetic-t3 int{bits}", *_pair(quantize_all(heavy, bits), bits)))
    if not args.skip_16m:
        report["decode_16m"] = decode_16m()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")


def _pair(qs, bits):
    tensors, scales = qs
    return tensors, bits, scales


if __name__ == "__main__":
    main()
