"""Entry point of an exported submission script: the bundled artifact's loss and bpb on validation shards.

Runs inside the self-extracting script that verify/submission.py writes, with golfpack's modules served from
the script itself; needs only torch, numpy, sentencepiece and the artifact's codec libraries. Options come
from the command line (defaults: Parameter Golf's data layout). Prints `val_loss:… val_bpb:…` and a JSON
line. Must not import anything that reads checkpoints or trains.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.errors import GolfpackError, MismatchError
from core.families import eval_context
from core.shards import find_shards, load_tokens
from core.tokenizer import Tokenizer
from packer.reader import read_artifact
from quant.unpack import build_model
from verify.evaluate import evaluate

DEFAULT_DATA = "./data/datasets/fineweb10B_sp1024"
DEFAULT_TOKENIZER = "./data/tokenizers/fineweb_1024_bpe.model"


def _parser(artifact: Path) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="submission.py", description="Evaluate the bundled golfpack artifact "
                                 "(bits per byte on the *_val_*.bin shards of a folder).")
    ap.add_argument("--artifact", type=Path, default=artifact, help="default: the artifact beside this script")
    ap.add_argument("--data", type=Path, default=Path(DEFAULT_DATA), help="folder of *_val_*.bin shards")
    ap.add_argument("--tokenizer", type=Path, default=Path(DEFAULT_TOKENIZER))
    ap.add_argument("--seq-len", type=int, default=None, help="context (default: the model family's)")
    ap.add_argument("--sliding-window", type=int, default=None, metavar="STRIDE")
    ap.add_argument("--batch-size", type=int, default=32)
    return ap


def run(argv: list[str], artifact: Path) -> dict:
    args = _parser(Path(artifact)).parse_args(argv)
    art = read_artifact(args.artifact)
    tok = Tokenizer.load(args.tokenizer)
    want = art.manifest["tokenizer"].get("sha256")
    if want and want != tok.sha256:
        raise MismatchError(f"tokenizer {args.tokenizer} (sha256 {tok.sha256[:12]}…) is not the one the artifact "
                         f"was packed for (sha256 {want[:12]}…); pass the matching --tokenizer")
    model = build_model(art)
    family = art.manifest["model"]["family"]
    context = eval_context(family, model.cfg, args.seq_len)
    val = load_tokens(find_shards(args.data, "val"))
    res = evaluate(lambda x: model(x), val, tok.byte_tables(), context, args.batch_size, False,
                   stride=args.sliding_window)
    return {"artifact": str(args.artifact), "sha256": art.file_sha256, "family": family, "seq_len": context,
            "sliding_window_stride": args.sliding_window, **res.summary()}


def main(argv: list[str], artifact: Path) -> int:
    try:
        rep = run(argv, artifact)
    except GolfpackError as exc:
        print(f"submission: error: {exc}")
        return exc.exit_code
    print(f"val_loss:{rep['val_loss']:.8f} val_bpb:{rep['val_bpb']:.8f}")
    print(json.dumps(rep, sort_keys=True))
    return 0
