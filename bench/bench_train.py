"""Training throughput (tokens per second) of golfpack's trainer: one process vs torchrun (gloo on CPU, NCCL
on GPU), with the model config, batch and machine load recorded beside every number.

    .venv/bin/python bench/bench_train.py [--out bench/results/train_throughput.json] [--seconds 8]

Each configuration runs in a fresh process (`python -m torch.distributed.run --nproc_per_node=N` for N > 1)
on random tokens (the cost of a step does not depend on token content) with the default model for a fixed
wall-clock time (--max-wallclock-seconds); rank 0 times the optimizer steps after a warm-up (it waits in the
gradient all-reduce, so it sees the global pace).
The load average is read before and after each run: other work on the machine slows the numbers. On a
machine with CUDA it adds GPU rows (bf16 autocast, fused AdamW); elsewhere the GPU row says why it is absent.
A benchmark, not a test: nothing here is imported by golfpack.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def worker(spec: dict, result_path: Path) -> None:
    import numpy as np

    from core.config import ModelConfig
    from core.distributed import distributed_session
    from core.train import TrainConfig, train

    mc = ModelConfig(**spec["model"])
    tc = TrainConfig(max_wallclock_seconds=spec["seconds"], batch_tokens=spec["batch_tokens"],
                     eval_every=10**9, threads=spec["threads"], device=spec["device"],
                     compile=spec["compile"], seed=0)
    tokens = np.random.default_rng(0).integers(0, mc.vocab_size, size=2_000_000, dtype=np.uint16)
    with distributed_session(spec["device"]) as ctx:
        res = train(mc, tc, tokens, tokens[:4096], None, progress=False, ctx=ctx)
        if ctx.is_main:
            h = res.history
            if len(h) < 3:
                raise RuntimeError(f"only {len(h)} steps in {spec['seconds']} s; raise --seconds")
            w = min(spec["warmup"], len(h) - 2)  # a slow configuration keeps at least 2 timed steps
            timed = len(h) - w
            seconds = h[-1]["seconds"] - h[w - 1]["seconds"]
            result_path.write_text(json.dumps({
                "seconds": seconds, "steps": timed,
                "tokens_per_second": timed * spec["batch_tokens"] / seconds,
                "steps_per_second": timed / seconds, "warmup_steps": w, "world_size": ctx.world_size,
                "device": str(ctx.device), "final_train_loss": h[-1]["train_loss"]}))


def run_one(spec: dict, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        me = [str(Path(__file__).resolve()), "--worker", str(spec_path), "--result", str(result_path)]
        if spec["world_size"] > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={spec['world_size']}", *me]
        else:
            cmd = [sys.executable, *me]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        out = json.loads(result_path.read_text())
    out.update(load_avg_1m_before=round(load_before[0], 2), load_avg_1m_after=round(os.getloadavg()[0], 2),
               process_wall_seconds=round(wall, 2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_throughput.json")
    ap.add_argument("--seconds", type=float, default=8.0, help="Training wall-clock per run.")
    ap.add_argument("--warmup", type=int, default=3, help="Steps left out of the timing.")
    ap.add_argument("--repeats", type=int, default=2, help="Runs per configuration; the best is reported.")
    ap.add_argument("--batch-tokens", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(json.loads(args.worker.read_text()), args.result)
        return

    import torch

    from core.config import ModelConfig

    model = ModelConfig().to_dict()
    cpu_count = os.cpu_count() or 1
    configs = []
    for bt in args.batch_tokens:
        configs += [
            {"world_size": 1, "threads": 1, "device": "cpu", "backend": None, "batch_tokens": bt},
            {"world_size": 1, "threads": cpu_count, "device": "cpu", "backend": None, "batch_tokens": bt},
            {"world_size": 2, "threads": 1, "device": "cpu", "backend": "gloo", "batch_tokens": bt},
        ]
    gpu: dict = {"status": "not measured: no GPU lent (torch.cuda.is_available() is False)"}
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        gpu = {"status": "measured", "name": torch.cuda.get_device_name(0), "count": n}
        for world in sorted({1, n}):
            configs.append({"world_size": world, "threads": None, "device": "cuda",
                            "backend": "nccl" if world > 1 else None, "batch_tokens": 65536 * world})
    rows = []
    for c in configs:
        spec = dict(c, model=model, seconds=args.seconds, warmup=args.warmup, compile=False)
        runs = [run_one(spec, timeout_s=600) for _ in range(args.repeats)]
        best = max(runs, key=lambda r: r["tokens_per_second"])
        row = {**c, "seconds_per_run": args.seconds, "warmup_steps": [r["warmup_steps"] for r in runs],
               "timed_steps": [r["steps"] for r in runs],
               "tokens_per_second": round(best["tokens_per_second"], 1),
               "steps_per_second": round(best["steps_per_second"], 3),
               "all_tokens_per_second": [round(r["tokens_per_second"], 1) for r in runs],
               "load_avg_1m": [[r["load_avg_1m_before"], r["load_avg_1m_after"]] for r in runs]}
        rows.append(row)
        print(f"world={c['world_size']} threads={c['threads']} {c['device']} "
              f"batch_tokens={c['batch_tokens']}: {row['tokens_per_second']:,.0f} tok/s "
              f"(runs {row['all_tokens_per_second']}, load {row['load_avg_1m']})", file=sys.stderr)
    doc = {"benchmark": "training throughput, tokens per optimizer step over all ranks / wall time",
           "command": "python bench/bench_train.py " + " ".join(sys.argv[1:]),
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cpu_count": cpu_count, "platform": platform.platform(),
                       "python": platform.python_version(), "torch": torch.__version__},
           "data": "uniform random tokens (throughput does not depend on token content)",
           "load_note": "1-minute load average before/after each run; it includes the runs of this benchmark "
                        "itself (the previous run, 1-2 busy processes) and other work on the machine",
           "model": model, "params": _params(model), "rows": rows, "gpu": gpu}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


def _params(model: dict) -> int:
    from core.config import ModelConfig
    from core.model import RecurrentLM

    return RecurrentLM(ModelConfig(**model)).num_parameters()


if __name__ == "__main__":
    main()
