"""Coverage-guided fuzzing of the artifact reader with atheris (libFuzzer). Run by hand; not part of `make test`.

Setup and run (atheris is the optional extra `fuzz`, not a core dependency):

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python bench/fuzz_atheris.py -max_total_time=300            # 5 minutes, fresh seed corpus
    .venv/bin/python bench/fuzz_atheris.py -atheris_runs=1000000 CORPUS/   # keep and grow a corpus folder
    .venv/bin/python bench/fuzz_atheris.py crash-<sha1>                    # replay one crashing input

The target reads the input as an artifact and does everything a consumer does: parse (packer.reader),
decode every section, type every array, rebuild every tensor (quant.unpack.artifact_tensors). Any exception
that is not an ArtifactError is a finding: libFuzzer stops and writes the input to `crash-<sha1>`. Without a
corpus folder the run starts from a temporary one seeded with small valid artifacts (every built-in codec).

A custom mutator lets libFuzzer get past the whole-file SHA-256: after libFuzzer's own mutation it
re-seals, by turns, nothing, the SHA-256 trailer, or the manifest length, section CRC-32s and trailer (a
1.1 manifest is decoded and re-compressed for that), so
mutations reach the manifest schema, the section table and the codecs. `seed_artifacts()` and
`test_one_input()` work without atheris (tests/packer/test_fuzz.py runs them, so this file cannot rot).
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HEADER, TRAILER = 10, 32


def seed_artifacts() -> list[bytes]:
    """Small valid artifacts: int rows over zstd/raw/lzma/ans/brotli, floats, an alias, an empty one."""
    import numpy as np

    from packer.writer import SectionSpec, build_artifact

    rng = np.random.default_rng(0)
    body = {"model": {"family": "recurrent", "config": {}}, "tool": {"name": "golfpack", "version": "fuzz"},
            "routing": {"policy": "entropy", "passes": 2, "threshold": 1.0, "cap_fraction": 0.2},
            "tokenizer": {"sha256": None, "vocab_size": 8}}
    codes = rng.integers(-7, 8, size=(4, 16)).astype(np.int8)
    scales = (rng.random(4) + 0.5).astype(np.float16)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    out = [build_artifact(dict(body, tensors=[]), []), build_artifact(dict(body, tensors=[]), [], minor=0)]
    for codec in ("zstd", "raw", "lzma", "ans", "brotli"):
        tensors = [{"name": "w", "shape": [4, 16], "format": "int4_row",
                    "sections": {"codes": "w/codes", "scales": "w/scales"}},
                   {"name": "f", "shape": [3, 5], "format": "fp32", "sections": {"data": "f"}},
                   {"name": "g", "shape": [3, 5], "alias_of": "f"}]
        out.append(build_artifact(dict(body, tensors=tensors), [
            SectionSpec("w/codes", codes.tobytes(), codec, {"dtype": "int8", "shape": [4, 16], "bits": 4}),
            SectionSpec("w/scales", scales.tobytes(), "raw", {"dtype": "float16", "shape": [4]}),
            SectionSpec("f", f32.tobytes(), "zstd" if codec == "ans" else codec,
                        {"dtype": "float32", "shape": [3, 5]})]))
    return out


def test_one_input(data: bytes) -> None:
    """Raise only if the reader (or a consumer of it) lets a non-golfpack exception out."""
    import numpy as np

    from common.errors import ArtifactError
    from packer.reader import parse_artifact
    from quant.unpack import artifact_tensors

    try:
        art = parse_artifact(data)
        for s in art.sections:
            art.raw(s.name)
            if "dtype" in s.params:
                art.array(s.name)
        with np.errstate(all="ignore"):
            artifact_tensors(art)
    except ArtifactError:
        pass


def reseal(data: bytes, fix_crcs: bool) -> bytes:
    """Recompute the trailer; with fix_crcs also the section CRC-32s and manifest_len (when the JSON parses)."""
    data = bytes(data)
    if len(data) < HEADER + TRAILER:
        return data
    if fix_crcs:
        from packer.manifest import encode_manifest, load_manifest, store_manifest

        mlen = struct.unpack_from("<I", data, 6)[0]
        try:
            m = json.loads(load_manifest(data[HEADER:HEADER + mlen], data[5]))
            payload = data[HEADER + mlen:-TRAILER]
            for s in m["sections"]:
                s["crc32"] = zlib.crc32(payload[s["offset"]:s["offset"] + s["stored_bytes"]])
            mb = store_manifest(encode_manifest(m), data[5])
            data = data[:6] + struct.pack("<I", len(mb)) + mb + payload + data[-TRAILER:]
        except Exception:  # noqa: BLE001, S110 - a mutant whose manifest does not parse keeps its bytes
            pass
    body = data[:-TRAILER]
    return body + hashlib.sha256(body).digest()


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    import atheris

    mutated = atheris.Mutate(data, max_size)
    mode = random.Random(seed).randrange(3)
    return mutated if mode == 0 else reseal(mutated, fix_crcs=mode == 2)


def main(argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports():     # the golfpack modules a file reaches, instrumented for coverage
        import packer.codecs
        import packer.manifest
        import packer.reader  # noqa: F401
        import quant.formats  # noqa: F401
    if not any(not a.startswith("-") for a in argv[1:]):       # no corpus folder or input file given
        corpus = Path(tempfile.mkdtemp(prefix="gpk-fuzz-corpus-"))
        for i, seed in enumerate(seed_artifacts()):
            (corpus / f"seed{i}.gpk").write_bytes(seed)
        argv = [*argv, str(corpus)]
        print(f"fuzz_atheris: seed corpus in {corpus}", file=sys.stderr)
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
