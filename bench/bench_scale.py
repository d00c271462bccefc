"""The scale benchmark: golfpack's daily jobs at the users' scale, stage by stage (wall time, CPU time, peak memory).

    .venv/bin/python bench/bench_scale.py --label after [--models pg17m,pg36m,montysteele]
        [--cases default,budget,verify,entropy] [--work /tmp/golfpack_scale] [--out bench/results/scale.json]

Checkpoints: bench/scale_models.py's record-scale Parameter Golf checkpoints (pg17m: 9 x 512, MLP 2x,
vocabulary 1024, 17.1M parameters; pg36m: 11 x 512, MLP 4x, vocabulary 8192, layers 3-5 looped: 17 applied,
36.0M parameters), and the largest real checkpoint in ../shared/data/pgolf/ when its architecture is one
golfpack reads. Data: the shared real text (WikiText-2 for validation, C4 + CCNet + the embedded corpus for
training/calibration), tokenized with the official sp1024 tokenizer, or with an 8192-piece SentencePiece
model trained here on the same text for pg36m. Every pack is a fresh `golfpack pack --json` process: its
report carries the stage table (load, budget check, calibration tokens, calibration forwards, encode/GPTQ,
candidate encoding, sensitivities, planning, final encode, write; common/stages.py) and the process's peak
RSS is the pack process's own (ru_maxrss, in its report). Cases: `default` (the default plan), `budget` (--budget-bytes 16,000,000: the planner
must choose), `verify` (1M validation tokens, and a plain PyTorch forward of the same model on the same
windows, side by side in one process), `entropy` (ans encode and decode throughput on the artifact's code
sections). `--limit-seconds` stops a pack that runs longer (recorded as unfinished, with how far it got).
The machine's load average is recorded with every row: other work shares its 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SHARED = ROOT.parent / "shared" / "data"


def run_cli(args: list[str], limit: float | None) -> dict:
    """A golfpack command in a fresh process: exit code, wall seconds, its report (stdout JSON: the pack report
    carries the process's peak RSS and the stage table), the stderr tail."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        timed_out = True
    wall = time.perf_counter() - t0
    try:
        rep = json.loads(out) if out.strip() else None
    except ValueError:
        rep = None
    return {"exit_code": proc.returncode, "timed_out": timed_out, "wall_s": round(wall, 2),
            "peak_rss_bytes": (rep or {}).get("peak_rss_bytes"),
            "peak_tree_rss_bytes": (rep or {}).get("peak_tree_rss_bytes"), "report": rep,
            "stderr_tail": err.strip().splitlines()[-6:]}


def prepare_data(work: Path) -> dict:
    """Tokenizers and shards (made once, reused): {vocab: (tokenizer, folder)}."""
    from core.dataset import data_job
    from core.tokenizer import train_tokenizer

    text_val = [SHARED / "text" / "wikitext2_test.raw"]
    text_train = [SHARED / "text" / "c4", SHARED / "text" / "ccnet", SHARED / "text" / "tinystories_val_100.txt"]
    out = {}
    tok1024 = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
    tok8192 = work / "tok8192" / "wiki_8192_bpe.model"
    if not tok8192.exists():
        from core.corpus import load_text_documents

        tok8192.parent.mkdir(parents=True, exist_ok=True)
        docs = load_text_documents([*text_val, *text_train])
        train_tokenizer((d.text for d in docs), tok8192, vocab_size=8192)
    for vocab, tok in ((1024, tok1024), (8192, tok8192)):
        folder = work / f"shards{vocab}"
        if not (folder / "text_val_000000.bin").exists() or not (folder / "text_train_000000.bin").exists():
            folder.mkdir(parents=True, exist_ok=True)
            data_job(text_val, tok, folder, "text", "val", progress=False, force=True)
            data_job(text_train, tok, folder, "text", "train", default_corpus=True, progress=False, force=True)
        out[vocab] = (tok, folder)
    return out


def models(work: Path, names: list[str]) -> dict:
    """name -> (checkpoint, extra pack/verify options, vocab)."""
    from scale_models import SHAPES, layer_schedule, write_checkpoint

    out = {}
    for name in names:
        if name in SHAPES:
            sched = layer_schedule(name)
            extra = ["--layer-schedule", ",".join(map(str, sched))] if sched else []
            out[name] = (write_checkpoint(name, work / "models"), extra, SHAPES[name]["vocab_size"])
        elif name == "nolanvild":
            out[name] = (SHARED / "pgolf" / "nolanvild" / "final_model.pt", ["--mlp-power", "3"], 1024)
    return out


def verify_side_by_side(artifact: Path, tok: Path, folder: Path, extra: list[str], tokens: int) -> dict:
    """golfpack's verify path and a plain PyTorch forward of the same model on the same windows, in one process,
    alternating (plain, verify, plain, verify) so drifting load hits both alike; tokens per second each."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from core.shards import find_shards, load_tokens
    from core.sources import PGolfOptions
    from verify.job import VerifyRequest, verify_job
    from verify.targets import open_target

    target = open_target(artifact, PGolfOptions())
    val = load_tokens(find_shards(folder, "val"))[: tokens + 1]
    L, B = 1024, 8
    n_win = (len(val) - 1) // L

    @torch.no_grad()
    def plain() -> float:
        t0 = time.perf_counter()
        x = torch.from_numpy(np.asarray(val[: n_win * L + 1], dtype=np.int64))
        xs, ys = x[:-1].view(n_win, L), x[1:].view(n_win, L)
        total = 0.0
        for i in range(0, n_win, B):
            logits = target.model(xs[i:i + B])
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ys[i:i + B].reshape(-1),
                                           reduction="sum"))
        return n_win * L / (time.perf_counter() - t0)

    rows = {"plain_tokens_per_s": [], "verify_tokens_per_s": []}
    for _ in range(2):
        rows["plain_tokens_per_s"].append(plain())
        rep = verify_job(VerifyRequest(artifact, (folder,), tok, batch_size=B, max_tokens=n_win * L + 1,
                                       progress=False))
        rows["verify_tokens_per_s"].append(rep["tokens_per_second"])
    med = {k: float(np.median(v)) for k, v in rows.items()}
    return {"tokens": n_win * L, "runs": rows, **med, "ratio": med["verify_tokens_per_s"] / med["plain_tokens_per_s"],
            "val_bpb": rep["val_bpb"]}


def entropy_throughput(artifact: Path) -> dict:
    """ans encode and decode of every int8 code section of the artifact (codes/s)."""
    from packer import codecs
    from packer.reader import read_artifact

    art = read_artifact(artifact)
    secs = [s for s in art.sections if s.params.get("dtype") == "int8" and "bits" in s.params]
    n = sum(s.raw_bytes for s in secs)
    raws = [art.raw(s.name) for s in secs]
    t0 = time.perf_counter()
    blobs = [codecs.encode("ans", r, s.params) for r, s in zip(raws, secs)]
    enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b, r, s in zip(blobs, raws, secs):
        assert codecs.decode("ans", b, len(r), s.params) == r
    dec = time.perf_counter() - t0
    return {"codes": n, "sections": len(secs), "encode_s": round(enc, 3), "decode_s": round(dec, 3),
            "encode_M_codes_per_s": n / enc / 1e6, "decode_M_codes_per_s": n / dec / 1e6,
            "ans_bytes": sum(map(len, blobs))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", required=True, help="before | after (the row's label in the results)")
    ap.add_argument("--models", default="pg17m,pg36m,nolanvild")
    ap.add_argument("--cases", default="default,budget,verify,entropy")
    ap.add_argument("--budget-bytes", type=int, default=16_000_000)
    ap.add_argument("--verify-tokens", type=int, default=1_000_000)
    ap.add_argument("--limit-seconds", type=float, default=None, help="stop a pack that runs longer")
    ap.add_argument("--work", type=Path, default=Path("/tmp/golfpack_scale"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(args.work)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    cases = args.cases.split(",")
    for name, (ckpt, extra, vocab) in models(args.work, args.models.split(",")).items():
        tok, folder = data[vocab]
        base = ["pack", str(ckpt), "--tokenizer", str(tok), "--calib-data", str(folder), "--json", "--force",
                "--route-signal", "none", *extra]
        for case in [c for c in cases if c in ("default", "budget")]:
            art = args.work / f"{name}_{case}.gpk"
            more = ["--budget-bytes", str(args.budget_bytes)] if case == "budget" else []
            load0 = os.getloadavg()
            row = run_cli([*base, "-o", str(art), *more], args.limit_seconds)
            rep = row.pop("report") or {}
            row.update({"label": args.label, "model": name, "case": case, "load_average_start": load0,
                        "load_average_end": os.getloadavg(), "total_bytes": rep.get("total_bytes"),
                        "file_bytes": rep.get("file_bytes"), "budget_bytes": rep.get("budget_bytes"),
                        "stages": (rep.get("planning") or {}).get("stages"),
                        "params": None, "checkpoint_bytes": ckpt.stat().st_size})
            results["runs"] = [r for r in results["runs"] if (r["label"], r["model"], r["case"])
                               != (args.label, name, case)] + [row]
            args.out.write_text(json.dumps(results, indent=2) + "\n")
            print(f"{args.label} {name} {case}: exit {row['exit_code']} {row['wall_s']} s, peak "
                  f"{(row['peak_rss_bytes'] or 0) / 2**20:.0f} MiB, {row['total_bytes']} B", flush=True)
        art = args.work / f"{name}_default.gpk"
        if "verify" in cases and art.exists():
            row = {"label": args.label, "model": name, "case": "verify", "load_average_start": os.getloadavg(),
                   **verify_side_by_side(art, tok, folder, extra, args.verify_tokens)}
            results["runs"] = [r for r in results["runs"] if (r["label"], r["model"], r["case"])
                               != (args.label, name, "verify")] + [row]
            print(f"{args.label} {name} verify: {row['verify_tokens_per_s']:.0f} tok/s vs plain "
                  f"{row['plain_tokens_per_s']:.0f} ({row['ratio']:.3f})", flush=True)
        if "entropy" in cases and art.exists():
            row = {"label": args.label, "model": name, "case": "entropy", "load_average_start": os.getloadavg(),
                   **entropy_throughput(art)}
            results["runs"] = [r for r in results["runs"] if (r["label"], r["model"], r["case"])
                               != (args.label, name, "entropy")] + [row]
            print(f"{args.label} {name} entropy: {row['encode_M_codes_per_s']:.2f} / "
                  f"{row['decode_M_codes_per_s']:.2f} M codes/s", flush=True)
        results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
