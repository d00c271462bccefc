"""The device check: golfpack's GPU paths on one GPU, in one short run that writes one JSON document.

    bash bench/gpu_check.sh [--tiny] [--out FILE]            (the wrapper sets PYTHONPATH and the thread count)

Full mode (one H100, under 8 minutes): the 36M record-shape checkpoint (bench/scale_models.py pg36m, 8192-piece
tokenizer and shards from the shared text, as bench/bench_scale.py makes them)
  1. default pack on the CPU and on CUDA: wall time and sha256 of each (byte identity: the default plan's
     decisions are made on the CPU whatever the device, quant/pipeline.py);
  2. the 16,000,000-byte planned pack on CUDA (wall time, stage table, total bytes); with --planned-cpu also on
     the CPU, for the planned packs' byte identity;
  3. verify of the default artifact on CUDA (1M tokens, tokens/s) and the same first 65,536 tokens on the CPU
     and on CUDA: the bpb difference;
  4. 60 s of `golfpack train --device cuda --compile` on a record-shaped recurrent core (d 512, 8 heads, 4 KV
     heads, MLP 4x, vocabulary 8192, context 1024, 11 blocks over 17 passes).
Tiny mode (--tiny, any machine, seconds): the same steps, on the CPU for both "devices", on a 2-layer model and
the embedded corpus; it keeps the script exercised where no GPU is (tests/test_gpu_check.py).
Every step is a fresh `golfpack` process (bench/bench_scale.py's run_cli); a failing step is recorded with its
stderr tail and the next runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_scale import prepare_data, run_cli
from scale_models import layer_schedule, write_checkpoint

FULL = {"model": "pg36m", "budget": 16_000_000, "verify_tokens": 1_000_000, "compare_tokens": 65_536,
        "train_seconds": 60, "pack": [], "train": ["--d-model", "512", "--n-heads", "8", "--n-kv-heads", "4", "--mlp-mult", "4",
                                      "--seq-len", "1024", "--blocks", "11", "--passes", "17",
                                      "--batch-tokens", "65536"]}
TINY = {"model": "pgtiny", "budget": 100_000, "verify_tokens": 4096, "compare_tokens": 2048, "train_seconds": 3,
        "pack": ["--sensitivity", "hessian", "--calib-tokens", "2048", "--joint-tokens", "0"], "train": ["--d-model", "32", "--n-heads", "2", "--n-kv-heads", "1", "--seq-len", "64", "--blocks", "1",
                  "--passes", "2", "--batch-size", "4"]}


def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def step(results: dict, name: str, args: list[str], limit: float | None = None) -> dict:
    """Run one golfpack command, record it under `name` (report trimmed to what the check needs)."""
    row = run_cli(args, limit)
    rep = row.pop("report") or {}
    keep = ("total_bytes", "file_bytes", "val_bpb", "val_loss", "tokens", "tokens_per_second", "device",
            "processes", "partial", "steps", "tokens_per_s", "final_val_bpb", "seconds")
    row.update({k: rep[k] for k in keep if k in rep})
    if "planning" in rep:
        row["stages"] = (rep.get("planning") or {}).get("stages")
    results["steps"][name] = row
    print(f"{name}: exit {row['exit_code']}, {row['wall_s']} s", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU-only, seconds: exercises the script anywhere")
    ap.add_argument("--planned-cpu", action="store_true", help="also the planned pack on the CPU (byte identity)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/golfpack_gpu_check"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    args = ap.parse_args()
    import torch

    mode = TINY if args.tiny else FULL
    gpu = "cpu" if args.tiny else "cuda"
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    results = {"mode": "tiny" if args.tiny else "full", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
               "device_under_test": gpu, "steps": {}}
    t_start = time.perf_counter()
    if args.tiny:
        from core.dataset import prepare_default_data

        bundle = prepare_default_data(work / "data", progress=False)
        tok, folder = bundle.tokenizer_path, work / "data"
    else:
        tok, folder = prepare_data(work)[8192]
    ckpt = write_checkpoint(mode["model"], work / "models")
    sched = layer_schedule(mode["model"])
    extra = ["--layer-schedule", ",".join(map(str, sched))] if sched else []
    base = ["pack", str(ckpt), "--tokenizer", str(tok), "--calib-data", str(folder), "--json", "--force",
            "--route-signal", "none", *extra, *mode["pack"]]
    pair = ("cpu", gpu) if gpu != "cpu" else ("cpu", "cpu-again")      # tiny: the CPU twice, same steps
    arts = {}
    for dev in pair:
        arts[dev] = work / f"default_{dev}.gpk"
        step(results, f"pack_default_{dev}", [*base, "-o", str(arts[dev]), "--device", dev.split("-")[0]])
    a, b = arts.values()
    results["default_identical"] = sha256(a) is not None and sha256(a) == sha256(b)
    budget = ["--budget-bytes", str(mode["budget"])]
    planned = work / f"planned_{gpu}.gpk"
    step(results, f"pack_planned_{gpu}", [*base, "-o", str(planned), *budget, "--device", gpu])
    if args.planned_cpu and gpu != "cpu":
        planned_cpu = work / "planned_cpu.gpk"
        step(results, "pack_planned_cpu", [*base, "-o", str(planned_cpu), *budget, "--device", "cpu"])
        results["planned_identical"] = sha256(planned) is not None and sha256(planned) == sha256(planned_cpu)
    audit = run_cli(["audit", str(planned), "--json"], None)
    results["planned_audit_total_bytes"] = (audit["report"] or {}).get("total_bytes")
    ver = ["verify", str(a), "--data", str(folder), "--tokenizer", str(tok), "--json", "--batch-size", "8", *extra]
    step(results, f"verify_{gpu}", [*ver, "--device", gpu, "--max-tokens", str(mode["verify_tokens"])])
    for dev in pair:
        step(results, f"verify_compare_{dev}", [*ver, "--device", dev.split("-")[0], "--max-tokens",
                                                str(mode["compare_tokens"])])
    bpb = [results["steps"][f"verify_compare_{d}"].get("val_bpb") for d in pair]
    results["verify_bpb_difference"] = abs(bpb[0] - bpb[1]) if None not in bpb else None
    train = ["train", "--data", str(folder), "--tokenizer", str(tok), "--out", str(work / "train"), "--force",
             "--json", "--train-seconds", str(mode["train_seconds"]), "--device", gpu, "--holdout-tokens", "0",
             *mode["train"], *([] if args.tiny else ["--compile"])]
    step(results, f"train_{gpu}", train)
    results["wall_s"] = round(time.perf_counter() - t_start, 1)
    results["ok"] = all(s["exit_code"] == 0 for s in results["steps"].values()) and results["default_identical"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"device check: {'ok' if results['ok'] else 'FAILED'} in {results['wall_s']} s -> {args.out}")


if __name__ == "__main__":
    main()
