"""The headline comparison: can a compact recurrent core with targeted extra compute beat a static model of
the same artifact bytes, trained for the same time on this machine?

    .venv/bin/python bench/bench_headline.py [--train-seconds 100] [--seeds 0,1] [--out bench/results/headline.json]

Three rows per seed, on the embedded Python-docs corpus (the demo's data):
  static          distinct blocks, one pass each (n_blocks = n_passes = K), trained with the ordinary loss;
  recurrent K     one shared block applied K times, widened so its artifact has about the static one's bytes,
                  trained with the two-exit loss (passes K and K+1), evaluated at uniform depth K;
  recurrent+rule  the same artifact under its embedded routing rule (calibrated at pack time on training
                  tokens, after quantization: the default signal choice, target fraction 0.25, cap 0.30);
and, for the overhead ratio r, the same artifact at uniform K+1.
Both models train for the same wall-clock seconds (one thread each, one after the other), are packed with
the default plan (int8 embedding, int6 matrices; the quantization engineer's calibration where it applies),
and are verified on the whole validation split. Eval time per token is measured on the first
`--time-tokens` validation tokens with one thread, the rows interleaved round-robin after a warm-up,
median of `--time-repeats` (wall clock and thread CPU time); r from the rounds' paired differences. The machine's load average is recorded: other
work on the shared CPU slows every number, and training steps depend on it. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

K = 3
STATIC = {"d_model": 128, "n_heads": 4, "n_kv_heads": 2, "n_passes": K, "n_blocks": K}
RECURRENT = {"d_model": 192, "n_heads": 4, "n_kv_heads": 2, "n_passes": K, "n_blocks": 1}


def timing(models: dict, tokens, repeats: int, n_tokens: int, batch: int = 32) -> dict:
    """Median time per token of each row; rows run back to back in every round (the first is a warm-up),
    so paired differences cancel the shared CPU's drifting load. Also the routing overhead ratio
    r = median(T_routed - T_K) / (f * median(T_K+1 - T_K)) from those paired rounds."""
    import numpy as np
    import torch

    from verify.adaptive import PolicyRunner

    out = {name: {"wall": [], "cpu": []} for name in models}
    L = next(iter(models.values()))[0].cfg.seq_len
    n_win = n_tokens // L
    toks = torch.from_numpy(np.asarray(tokens[: n_win * L + 1], dtype=np.int64))
    x, y = toks[:-1].view(n_win, L), toks[1:].view(n_win, L)
    chunks = [(x[i:i + batch], y[i:i + batch]) for i in range(0, n_win, batch)]
    runners = {name: PolicyRunner(m, pol) for name, (m, pol) in models.items()}
    for rep in range(repeats + 1):
        for name, fn in runners.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            for xb, yb in chunks:
                fn.nll(xb, yb)
            if rep:
                out[name]["wall"].append(time.perf_counter() - w0)
                out[name]["cpu"].append(time.thread_time() - c0)
    n = n_win * L
    res = {name: {"us_per_token_wall": float(np.median(v["wall"])) / n * 1e6,
                  "us_per_token_cpu": float(np.median(v["cpu"])) / n * 1e6, "timed_tokens": n,
                  "wall_runs_s": v["wall"], "cpu_runs_s": v["cpu"]} for name, v in out.items()}
    f = runners["recurrent_routed"].stats.fraction
    for key in ("wall", "cpu"):
        k, a, k1 = (np.array(out[r][key]) for r in ("recurrent_uniform_k", "recurrent_routed", "recurrent_uniform_k1"))
        res["recurrent_routed"][f"overhead_ratio_{key}"] = float(np.median(a - k) / (f * np.median(k1 - k)))
    res["recurrent_routed"]["timed_fraction"] = f
    return res


def one_seed(work: Path, bundle, seed: int, train_seconds: float, args) -> dict:
    import torch

    from core.config import ModelConfig
    from core.route_calibrate import RouteOptions
    from core.shards import find_shards, load_tokens
    from core.sources import load_source
    from core.train import TrainConfig
    from core.train_job import run_train
    from packer.reader import read_artifact
    from quant.calibrate import CalibConfig
    from quant.pack_job import PackRequest, pack_job
    from quant.unpack import build_model
    from verify.adaptive import resolve_policy
    from verify.job import VerifyRequest, verify_job

    torch.set_num_threads(1)
    rows = {}
    arts = {}
    for name, spec, two_exit in (("static", STATIC, False), ("recurrent", RECURRENT, True)):
        load0 = os.getloadavg()[0]
        tc = TrainConfig(train_seconds=train_seconds, seed=seed, two_exit=two_exit, threads=1, eval_every=10**9)
        res = run_train(work, bundle.tokenizer_path, work / f"s{seed}", ModelConfig(**spec), tc,
                        name=f"{name}_s{seed}", progress=False)
        art = work / f"s{seed}" / f"{name}.gpk"
        packed = pack_job(load_source(res.checkpoint), PackRequest(
            out=art, calib=CalibConfig(data=work), progress=False,
            route=RouteOptions(seed=seed) if name == "recurrent" else None))
        arts[name] = art
        rows[name] = {"model": spec, "params": res.params, "train_steps": res.steps,
                      "train_seconds": round(res.seconds, 1), "two_exit_loss": two_exit,
                      "artifact_bytes": packed.file_bytes, "counted_bytes": packed.total_bytes,
                      "float_val_bpb": res.val_bpb, "load_average_at_start": load0}
    policies = {"static": ("static", "embedded"), "recurrent_uniform_k": ("recurrent", "uniform-K"),
                "recurrent_routed": ("recurrent", "embedded"), "recurrent_uniform_k1": ("recurrent", "uniform-K+1")}
    out = {}
    for row, (name, policy) in policies.items():
        rep = verify_job(VerifyRequest(arts[name], (work,), bundle.tokenizer_path, policy=policy, progress=False))
        out[row] = {**rows[name], "policy": rep["policy"], "val_bpb": rep["val_bpb"],
                    "route_signal": rep.get("route_signal"),
                    "route_fraction_realized": rep.get("route_fraction_realized"),
                    "cap_bound_count": rep.get("cap_bound_count"), "flops_per_token": rep.get("flops_per_token"),
                    "verify_tokens_per_second": rep["tokens_per_second"]}
        if row == "recurrent_routed":
            out[row]["routing"] = read_artifact(arts[name]).manifest["routing"]
    models = {}
    for row, (name, policy) in policies.items():
        m = build_model(read_artifact(arts[name]))
        pol = resolve_policy(policy, m.cfg, read_artifact(arts[name]).manifest["routing"])
        models[row] = (m, pol)
    val = load_tokens(find_shards(work, "val"))
    for row, t in timing(models, val, args.time_repeats, args.time_tokens).items():
        out[row].update(t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-seconds", type=float, default=100.0)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--time-tokens", type=int, default=8192)
    ap.add_argument("--time-repeats", type=int, default=7)
    ap.add_argument("--work", type=Path, default=Path("/tmp/golfpack_headline"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "headline.json")
    args = ap.parse_args()

    from core.dataset import prepare_default_data

    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = prepare_default_data(args.work)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    per_seed = {}
    for seed in seeds:
        per_seed[str(seed)] = one_seed(args.work, bundle, seed, args.train_seconds, args)
        print(json.dumps({seed: {r: {k: v[k] for k in ("val_bpb", "us_per_token_wall", "us_per_token_cpu",
                                                       "artifact_bytes", "train_steps")}
                                 for r, v in per_seed[str(seed)].items()}}), file=sys.stderr, flush=True)
    rows = list(next(iter(per_seed.values())))
    mean = {r: {k: sum(per_seed[s][r][k] for s in per_seed) / len(per_seed)
                for k in ("val_bpb", "us_per_token_wall", "us_per_token_cpu", "artifact_bytes", "train_steps")}
            for r in rows}
    result = {"what": "static vs recurrent core (uniform K, and with its routing rule) at the same artifact bytes "
                      "and the same training time; demo corpus; verified bpb on the full validation split",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_average_end": os.getloadavg()},
              "train_seconds": args.train_seconds, "seeds": seeds, "threads": 1,
              "time_tokens": args.time_tokens, "time_repeats": args.time_repeats,
              "bench_seconds": round(time.perf_counter() - t0, 1), "mean_over_seeds": mean, "per_seed": per_seed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(mean, indent=2))


if __name__ == "__main__":
    main()
