"""Real code sets for the entropy benchmark: the records' precision on every real Parameter Golf checkpoint.

- `<run> int6 gptq`: the int6 GPTQ codes golfpack itself stores for the `.pt` checkpoints (nolanvild,
  taleef7): `golfpack pack --matrix-format int6_row --embed-format int8_row` with Hessians from the prepared
  training shards, read back from the artifact (every matrix but the embedding).
- `<run> int8 embed`: the same artifact's int8 per-row embedding codes.
- `<run> int5` / `int4`: those int6 codes dequantized (codes x fp16 scales) and requantized per row
  (quant.primitives, absmax round-to-nearest).
- `montysteele int6 qat`: the 6-bit QAT run's stored codes (its `.ptz`, int8 tensors within +-31), taken as
  they are: the block matrices; `montysteele int6 embed`: its tied embedding. No int5/int4 from them: the
  block codes already sit within +-5..14 (the exporter clamps scales at 1/31), so absmax requantization to
  fewer bits would make a finer grid, not a real int5/int4 code set.

Artifacts are built once into a cache folder (default /tmp/golfpack-entropy-sets; --cache) and reused.
Nothing from ../shared/data is copied into the repository.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT / ".." / "shared" / "data"
PGOLF = SHARED / "pgolf"
TOKENIZER = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
SHARDS = Path("/work/baseline/pg")          # prepared `golfpack data` shards (read only)
MLP_POWER = {"nolanvild": 3, "taleef7": 2}
CACHE = Path("/tmp/golfpack-entropy-sets")

Tensors = list[tuple[str, np.ndarray, np.ndarray]]     # (name, int8 codes [R, C], fp16 scales [R])


def _make_shards(cache: Path) -> Path:
    if sorted(SHARDS.glob("*_train_*.bin")):
        return SHARDS
    out = cache / "shards"
    if not sorted(out.glob("*_train_*.bin")):
        subprocess.run([sys.executable, "-m", "cli", "data", str(SHARED / "text" / "c4"), str(SHARED / "text" / "ccnet"),
                        "--tokenizer", str(TOKENIZER), "--out", str(out), "--name", "fineweb", "--split", "train"],
                       check=True, cwd=ROOT)
    return out


def packed_codes(run: str, cache: Path = CACHE) -> tuple[Tensors, Tensors]:
    """(int6 matrices, int8 embedding) as golfpack stores them for pgolf/<run>/final_model.pt."""
    from packer.reader import read_artifact

    cache.mkdir(parents=True, exist_ok=True)
    art_path = cache / f"{run}_int6.gpk"
    if not art_path.exists():
        cmd = [sys.executable, "-m", "cli", "pack", str(PGOLF / run / "final_model.pt"),
               "--mlp-power", str(MLP_POWER.get(run, 2)), "--tokenizer", str(TOKENIZER),
               "--calib-data", str(_make_shards(cache)), "--matrix-format", "int6_row", "--embed-format", "int8_row",
               "--codecs", "zstd", "-o", str(art_path)]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    art = read_artifact(art_path)
    mats, emb = [], []
    for entry in sorted(art.manifest["tensors"], key=lambda e: e["name"]):
        name = entry["name"]
        if entry.get("format") not in ("int6_row", "int8_row"):
            continue
        codes = np.array(art.array(entry["sections"]["codes"]))
        scales = np.array(art.array(entry["sections"]["scales"])).reshape(-1)
        (emb if entry["format"] == "int8_row" else mats).append((name, codes, scales))
    return mats, emb


def montysteele_codes() -> tuple[Tensors, Tensors]:
    """(block matrices, tied embedding) int8 codes of montysteele's 6-bit QAT `.ptz`, with their scales."""
    import torch

    raw = (PGOLF / "montysteele" / "final_model.int8.ptz").read_bytes()
    obj = torch.load(io.BytesIO(zlib.decompress(raw)), map_location="cpu", weights_only=True)
    mats, emb = [], []
    for name, q in sorted(obj["quantized"].items()):
        t = (name, q.numpy().astype(np.int8), obj["scales"][name].to(torch.float16).numpy().reshape(-1))
        (emb if "tok_emb" in name else mats).append(t)
    return mats, emb


def requantize(tensors: Tensors, bits: int) -> Tensors:
    from quant import primitives as P

    out = []
    for name, c, s in tensors:
        c2, s2 = P.quantize_rows(P.dequantize_rows(c, s), bits)
        out.append((name, c2, s2))
    return out


def code_sets(cache: Path = CACHE) -> list[tuple[str, int, Tensors]]:
    """[(set name, bits, tensors)] for every real checkpoint present (none when ../shared/data is absent)."""
    sets = []
    for run in ("nolanvild", "taleef7"):
        if not (PGOLF / run / "final_model.pt").exists():
            continue
        mats, emb = packed_codes(run, cache)
        sets.append((f"{run} int6 gptq", 6, mats))
        sets.append((f"{run} int5 (from int6)", 5, requantize(mats, 5)))
        sets.append((f"{run} int4 (from int6)", 4, requantize(mats, 4)))
        sets.append((f"{run} int8 embed", 8, emb))
    if (PGOLF / "montysteele" / "final_model.int8.ptz").exists():
        mats, emb = montysteele_codes()
        sets.append(("montysteele int6 qat", 6, mats))      # no int5/int4: see bench_entropy's "skipped"
        sets.append(("montysteele int6 embed", 6, emb))
    return sets


if __name__ == "__main__":
    for name, bits, tensors in code_sets():
        n = sum(c.size for _, c, _ in tensors)
        print(f"{name:32s} bits={bits} tensors={len(tensors)} codes={n}")
