"""How fast the reader refuses hostile manifests and reads large legal ones (the timings the attack tests used to
assert; timing belongs here, not in tests).

    .venv/bin/python bench/bench_reader.py [--repeats 5] [--out bench/results/reader.json]

Cases: a 1 MiB manifest of nested brackets ("[" * 1 MiB, and '{"a":' repeated to 1 MiB), refused by the bracket
count before the JSON parser sees it; a legal manifest carrying a 150,000-element list, parsed and checked in
full; the 1 MiB + 1 byte manifest, refused unparsed. Median of `--repeats` runs each, wall clock, one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "packer"))

from artifact_kit import reseal_manifest, seal, small_artifact, split

from common.errors import ManifestError
from packer import constants as C
from packer.reader import parse_artifact


def timed(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def refused(data: bytes):
    def run():
        try:
            parse_artifact(data)
        except ManifestError:
            return
        raise AssertionError("not refused")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reader.json")
    args = ap.parse_args()
    mjson, payload = split(small_artifact())
    m = json.loads(mjson)
    big = dict(m, options={**m["options"], "blob": list(range(150_000))})
    over = dict(m, options={**m["options"], "blob": "x" * C.MAX_MANIFEST_BYTES})
    cases = {
        "refuse 1 MiB of '['": refused(seal(b"[" * C.MAX_MANIFEST_BYTES, payload)),
        "refuse 1 MiB of '{\"a\":'": refused(seal(b'{"a":' * (C.MAX_MANIFEST_BYTES // 5), payload)),
        "read a legal manifest with a 150,000-element list": lambda: parse_artifact(reseal_manifest(big, payload)),
        "refuse a manifest of 1 MiB + 1 byte, unparsed": refused(reseal_manifest(over, payload)),
    }
    rows = {name: round(timed(fn, args.repeats), 4) for name, fn in cases.items()}
    out = {"what": "reader: seconds per case (median)", "repeats": args.repeats, "seconds": rows,
           "load_average": os.getloadavg(), "python": sys.version.split()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for name, s in rows.items():
        print(f"{s:8.4f} s  {name}")


if __name__ == "__main__":
    main()
