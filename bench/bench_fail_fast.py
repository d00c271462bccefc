"""How long golfpack takes to refuse a pack that cannot succeed (issue: errors before heavy work), measured as a
user sees it: the whole command, a fresh process each time, on a real checkpoint.

    .venv/bin/python bench/bench_fail_fast.py --ckpt runs/demo/pydocs_recurrent [--out bench/results/fail_fast.json]

Cases: an impossible --budget-bytes (1,000 and one a little below the smallest plan's estimate), an output in
a folder that does not exist, an output over a file golfpack did not write, an output that is the checkpoint.
Each is run `--repeats` times; the median wall time and the exit code are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fail_fast.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "notes.txt").write_text("mine")
    cases = {"impossible budget 1,000 B": ["--budget-bytes", "1000", "-o", str(tmp / "a.gpk")],
             "impossible budget 60,000 B": ["--budget-bytes", "60000", "-o", str(tmp / "a.gpk")],
             "output folder missing": ["-o", str(tmp / "nodir" / "sub" / "x.gpk")],
             "output over a file golfpack did not write": ["-o", str(tmp / "notes.txt")],
             "output is the checkpoint": ["-o", str(args.ckpt.with_suffix(".safetensors"))]}
    rows = {}
    for name, extra in cases.items():
        times, codes, line = [], set(), ""
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "cli", "pack", str(args.ckpt), *extra], cwd=ROOT,
                                 capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - t0)
            codes.add(res.returncode)
            line = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
        rows[name] = {"seconds_median": round(statistics.median(times), 2), "exit_codes": sorted(codes),
                      "message": line}
        print(f"{rows[name]['seconds_median']:6.2f} s  exit {sorted(codes)}  {name}: {line[:110]}")
    out = {"what": "seconds until a pack that cannot succeed is refused (whole command, fresh process)",
           "checkpoint": str(args.ckpt), "repeats": args.repeats, "cases": rows, "load_average": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
