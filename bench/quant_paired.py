"""How sure is a row of the quantization benchmark? Paired bootstrap intervals for golfpack − peer.

bench/bench_quant.py keeps every artifact it scored in its --work folder. This script re-scores, for the
rows of a results JSON that golfpack does not win (or every row, with --all), the golfpack artifact and the
peer's artifact on the same validation tokens, per token, and resamples documents (verify/bootstrap.py; or
context-length blocks when the stream holds fewer than 20 documents) to give the 95% interval of the bpb
difference. Rows are matched to files by name (peer: `*_records_<b>_<e>_
<method>.gpk`, `*_baseline.gpk`) and by file size (golfpack: the row's `golfpack_file_bytes`). Writes the
intervals into the JSON under `paired` and prints a table.

    .venv/bin/python bench/quant_paired.py --results bench/results/quant_demo.json --work WORK \
        --data SHARDS --tokenizer TOKENIZER.model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.tokenizer import Tokenizer
from verify.adaptive import runner_for_target
from verify.bootstrap import PairedBootstrap, document_ids
from verify.evaluate import evaluate
from verify.job import load_eval_tokens
from verify.targets import context_length, open_target


def peer_file(work: Path, row: dict) -> Path:
    pattern = ("*_baseline.gpk" if row["family"] == "baseline"
               else f"*_records_{row['bits']}_{row['emb_bits']}_{row['method']}.gpk")
    found = sorted(work.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"{work}: expected one file {pattern} for row {row['peer']!r}, found {len(found)}")
    return found[0]


def golfpack_file(work: Path, row: dict) -> Path:
    found = [p for p in sorted(work.glob("*_golfpack_*.gpk")) if p.stat().st_size == row["golfpack_file_bytes"]]
    if not found:
        raise SystemExit(f"{work}: no golfpack artifact of {row['golfpack_file_bytes']} bytes for {row['peer']!r}")
    return found[0]


MIN_DOCUMENTS = 20


def resampler(tokens: np.ndarray, bos_id: int, token_bytes: np.ndarray, n_boot: int,
              block: int) -> tuple[PairedBootstrap, str]:
    """Resample documents (BOS-delimited) when the stream has at least MIN_DOCUMENTS of them, else
    contiguous blocks of one context length (a stream cut from one long text has no documents to draw)."""
    docs = document_ids(tokens, bos_id)
    if int(docs.max()) + 1 >= MIN_DOCUMENTS:
        return PairedBootstrap(docs, token_bytes, n_boot), "documents of the validation stream (BOS-delimited)"
    blocks = np.arange(len(tokens) - 1) // block
    return (PairedBootstrap(blocks, token_bytes, n_boot),
            f"blocks of {block} validation tokens (the stream has {int(docs.max()) + 1} document(s))")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="bench_quant.py's --work folder of that run")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--all", action="store_true", help="every row, not only those golfpack does not win")
    ap.add_argument("--boot", type=int, default=2000)
    args = ap.parse_args()

    out = json.loads(args.results.read_text())
    tok = Tokenizer.load(args.tokenizer)
    val, _, _ = load_eval_tokens([args.data], tok)
    cache: dict[Path, tuple[np.ndarray, np.ndarray, float]] = {}

    def scored(path: Path):
        if path not in cache:
            target = open_target(path)
            runner = runner_for_target(target, "embedded", None)
            res = evaluate(runner or (lambda x, m=target.model: m(x)), val, tok.byte_tables(),
                           context_length(target, None))
            cache[path] = (res.token_nats, res.token_bytes, res.val_bpb)
        return cache[path]

    boot, unit = None, None
    rows = [r for r in out["peers"] if args.all or not r["golfpack_wins"]]
    paired = []
    for row in rows:
        g, p = golfpack_file(args.work, row), peer_file(args.work, row)
        (g_nats, nbytes, g_bpb), (p_nats, _, p_bpb) = scored(g), scored(p)
        if boot is None:
            boot, unit = resampler(val[:len(g_nats) + 1], tok.bos_id, nbytes, args.boot,
                                   context_length(open_target(g), None))
        d = boot.delta_bpb(g_nats, p_nats)
        paired.append({"peer": row["peer"], "peer_bytes": row["bytes"], "golfpack_file": g.name,
                       "peer_file": p.name, "golfpack_bpb": g_bpb, "peer_bpb": p_bpb, "fp32_bpb": out["fp32_bpb"],
                       "delta_bpb": d["delta"], "ci95": [d["lo"], d["hi"]], "units": boot.n_docs})
        print(f"{row['peer']:<52} {row['bytes']:>9,} B  golfpack - peer {d['delta']:+.5f} "
              f"[{d['lo']:+.5f}, {d['hi']:+.5f}]  (peer - fp32 {p_bpb - out['fp32_bpb']:+.5f})")
    out["paired"] = {"rows": paired, "bootstrap_samples": args.boot, "level": 0.95, "unit": unit}
    args.results.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
