"""Property fuzzer: mutated valid artifacts make the reader raise golfpack's own errors, and nothing else.

Hypothesis draws a base artifact, a mutation plan, a re-sealing mode and a seed; each example then derives
MUTANTS_PER_EXAMPLE mutated files from the seed (so one example is a batch and 10,000+ files run in a few
seconds). Byte-level mutations hit the container; with the SHA-256 (and CRC-32s) re-sealed, and with
JSON-level mutations re-encoded canonically, they reach the manifest schema, the section table and the
codecs. Each file goes through everything a consumer does: parse, decode every section, type every array,
and rebuild every tensor through its format (quant.unpack.artifact_tensors). Any exception that is not an
ArtifactError is an escape and fails the test with the offending file's description.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from artifact_kit import read_everything, reseal_manifest, reseal_sha, small_artifact, split
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import ArtifactError
from packer import constants as C
from packer.writer import SectionSpec, build_artifact

MUTANTS_PER_EXAMPLE = 64
EXAMPLES = 200                    # x 64 = 12,800 mutated artifacts per run
INTERESTING_INTS = [0, 1, -1, 2, 7, 8, 31, 32, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**34,
                    2**63, 10**12, -2**31]
INTERESTING_BYTES = [0x00, 0xFF, 0x7F, 0x80, ord('"'), ord("{"), ord("["), ord("]"), ord("}"), ord(","),
                     ord(":"), ord("0"), ord("9"), ord("-"), ord("\\"), ord("e"), ord(" ")]


def _bases() -> list[bytes]:
    """A few valid artifacts of different shapes: the kit's, a many-section one, an empty one, a float one."""
    rng = np.random.default_rng(1)
    body = {"model": {"family": "recurrent", "config": {}}, "routing": {"policy": "uniform", "passes": 2},
            "tokenizer": {"sha256": None, "vocab_size": 4}, "tool": {"name": "golfpack", "version": "fuzz"}}
    tensors, specs = [], []
    for i in range(6):
        shape = [int(rng.integers(1, 5)), int(rng.integers(1, 6))]
        codec = ["raw", "zstd", "lzma"][i % 3]
        arr = rng.integers(-7, 8, size=shape).astype(np.int8)
        arr[:, 0] = 0
        scales = rng.random(shape[0]).astype(np.float16)
        tensors.append({"name": f"t{i}", "shape": shape, "format": "int4_row",
                        "sections": {"codes": f"t{i}/codes", "scales": f"t{i}/scales"}})
        specs += [SectionSpec(f"t{i}/codes", arr.tobytes(), codec, {"dtype": "int8", "shape": shape, "bits": 4}),
                  SectionSpec(f"t{i}/scales", scales.tobytes(), "raw", {"dtype": "float16", "shape": [shape[0]]})]
    many = build_artifact(dict(body, tensors=tensors), specs)
    empty = build_artifact(dict(body, tensors=[]), [], minor=0)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    bf = (f32.view(np.uint32) >> 16).astype(np.uint16)
    floats = build_artifact(dict(body, tensors=[
        {"name": "a", "shape": [3, 5], "format": "fp32", "sections": {"data": "a"}},
        {"name": "b", "shape": [3, 5], "format": "bf16", "sections": {"data": "b"}},
        {"name": "c", "shape": [3, 5], "alias_of": "a"}]),
        [SectionSpec("a", f32.tobytes(), "zstd", {"dtype": "float32", "shape": [3, 5], "level": 3}),
         SectionSpec("b", bf.tobytes(), "lzma", {"dtype": "bfloat16", "shape": [3, 5]})], minor=0)
    codes = rng.integers(-7, 8, size=(6, 16)).astype(np.int8)
    entropy = build_artifact(dict(body, tensors=[
        {"name": "q", "shape": [6, 16], "format": "int4_row", "sections": {"codes": "q/codes", "scales": "q/s"}},
        {"name": "f", "shape": [3, 5], "format": "fp32", "sections": {"data": "f"}}]),
        [SectionSpec("q/codes", codes.tobytes(), "ans", {"dtype": "int8", "shape": [6, 16], "bits": 4}),
         SectionSpec("q/s", (rng.random(6) + 0.5).astype(np.float16).tobytes(), "brotli",
                     {"dtype": "float16", "shape": [6]}),
         SectionSpec("f", f32.tobytes(), "brotli-shuffle", {"dtype": "float32", "shape": [3, 5]})])
    return [small_artifact(), small_artifact(minor=1), many, empty, floats, entropy]   # 1.0 and 1.1 files


BASES = _bases()


# --- byte-level mutations ----------------------------------------------------------------------------------
def _flip(b: bytearray, rng) -> None:
    for _ in range(int(rng.integers(1, 5))):
        i = int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8))


def _set_byte(b: bytearray, rng) -> None:
    b[int(rng.integers(0, len(b)))] = INTERESTING_BYTES[int(rng.integers(0, len(INTERESTING_BYTES)))]


def _insert(b: bytearray, rng) -> None:
    i = int(rng.integers(0, len(b) + 1))
    b[i:i] = rng.integers(0, 256, size=int(rng.integers(1, 9))).astype(np.uint8).tobytes()


def _delete(b: bytearray, rng) -> None:
    i = int(rng.integers(0, len(b)))
    del b[i:i + int(rng.integers(1, 17))]


def _duplicate(b: bytearray, rng) -> None:
    i = int(rng.integers(0, len(b)))
    j = min(len(b), i + int(rng.integers(1, 33)))
    b[j:j] = b[i:j]


def _truncate(b: bytearray, rng) -> None:
    del b[int(rng.integers(0, len(b))):]


def _u32(b: bytearray, rng) -> None:
    if len(b) >= 4:
        i = int(rng.integers(0, len(b) - 3))
        b[i:i + 4] = struct.pack("<I", INTERESTING_INTS[int(rng.integers(0, len(INTERESTING_INTS)))] % 2**32)


def _splice(b: bytearray, rng) -> None:
    other = BASES[int(rng.integers(0, len(BASES)))]
    i, j = sorted(int(x) for x in rng.integers(0, len(other), size=2))
    k = int(rng.integers(0, len(b)))
    b[k:k + (j - i)] = other[i:j]


BYTE_OPS = {"flip": _flip, "set_byte": _set_byte, "insert": _insert, "delete": _delete,
            "duplicate": _duplicate, "truncate": _truncate, "u32": _u32, "splice": _splice}


# --- JSON-level mutations (re-encoded canonically, so they reach the schema) -------------------------------
def _random_value(rng, depth: int = 0):
    kind = int(rng.integers(0, 11 if depth < 3 else 9))
    if kind == 9:
        return [_random_value(rng, depth + 1)]
    if kind == 10:
        return {"k": _random_value(rng, depth + 1)}
    return [None, True, False, INTERESTING_INTS[int(rng.integers(0, len(INTERESTING_INTS)))], 1.5, -0.0, "",
            "x" * int(rng.integers(1, 300)), []][kind]


def _nodes(obj, path=()):
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nodes(v, path + (i,))


_PATHS: dict[bytes, tuple[list, list]] = {}


def _paths(mb: bytes) -> tuple[list, list]:
    """(every node path, every string value) of a base manifest, computed once per base."""
    if mb not in _PATHS:
        nodes = list(_nodes(json.loads(mb)))[1:]
        _PATHS[mb] = ([p for p, _ in nodes], [v for _, v in nodes if isinstance(v, str)])
    return _PATHS[mb]


def _json_mutate(m: dict, paths: list, names: list, rng) -> None:
    path = paths[int(rng.integers(0, len(paths)))]
    parent = m
    try:
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        value = parent[key]
    except (KeyError, IndexError, TypeError):   # an earlier mutation removed this node
        return
    if not isinstance(parent, (dict, list)):
        return
    op = int(rng.integers(0, 7))
    if op == 0:
        parent[key] = _random_value(rng)
    elif op == 1 and isinstance(parent, dict):
        del parent[key]
    elif op == 2 and isinstance(value, int) and not isinstance(value, bool):
        parent[key] = value + int(rng.choice([-1, 1, value, -2 * value - 1, 2**32]))
    elif op == 3 and isinstance(value, list) and value:
        value.append(value[int(rng.integers(0, len(value)))])
    elif op == 4 and isinstance(value, list) and len(value) > 1:
        i, j = (int(x) for x in rng.integers(0, len(value), size=2))
        value[i], value[j] = value[j], value[i]
    elif op == 5 and isinstance(value, dict):
        value[str(rng.choice(["name", "shape", "dtype", "alias_of", "format", "extra", "codec"]))] = \
            _random_value(rng)
    elif op == 6 and isinstance(value, str):
        parent[key] = names[int(rng.integers(0, len(names)))]
    else:
        parent[key] = _random_value(rng)


def mutate(base: bytes, plan: list[str], reseal: str, rng) -> bytes:
    if reseal == "json":
        mb, payload = split(base)
        m = json.loads(mb)
        paths, names = _paths(mb)
        for _ in range(len(plan)):
            _json_mutate(m, paths, names, rng)
        try:
            return reseal_manifest(m, payload, crc=bool(rng.integers(0, 2)), minor=base[5])
        except (TypeError, ValueError):   # a mutation json cannot encode: fall back to byte mutations
            pass
    if reseal == "payload":   # same-length damage to the payload only, CRCs and SHA fixed: reaches the codecs
        mb, payload = split(base)
        b = bytearray(payload)
        for op in plan:
            if b:
                BYTE_OPS[op if op in ("flip", "set_byte", "u32") else "flip"](b, rng)
        return reseal_manifest(json.loads(mb), bytes(b), minor=base[5])
    b = bytearray(base)
    for op in plan:
        if not b:
            break
        BYTE_OPS[op](b, rng)
    data = bytes(b)
    if reseal != "none" and len(data) >= C.HEADER_BYTES + C.TRAILER_BYTES:
        data = reseal_sha(data)
        if reseal == "sha+crc" and data[5] in C.MANIFEST_STORAGE:
            try:
                mb, payload = split(data)
                m = json.loads(mb)
                data = reseal_manifest(m, payload, minor=data[5]) if isinstance(m, dict) else data
            except (ArtifactError, ValueError, TypeError, RecursionError):
                pass
    return data


def consume(data: bytes) -> str:
    """Everything a consumer does with an artifact; the name of the outcome."""
    from quant.unpack import artifact_tensors
    try:
        art = read_everything(data)
        with np.errstate(all="ignore"):     # a re-sealed mutant may carry NaN scales: valid bytes, odd values
            artifact_tensors(art)
    except ArtifactError as exc:
        return type(exc).__name__
    return "accepted"


@pytest.mark.parametrize("examples", [pytest.param(40, id="2560-mutants"),
                                      pytest.param(EXAMPLES, id="12800-mutants", marks=pytest.mark.slow)])
def test_fuzz_reader_only_raises_artifact_errors(examples):
    outcomes: Counter = Counter()
    escapes: list[str] = []

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(base=st.integers(0, len(BASES) - 1), seed=st.integers(0, 2**32 - 1),
           plan=st.lists(st.sampled_from(sorted(BYTE_OPS)), min_size=1, max_size=4),
           reseal=st.sampled_from(["none", "sha", "sha+crc", "json", "json", "payload"]))
    def run(base, seed, plan, reseal):
        rng = np.random.default_rng(seed)
        for k in range(MUTANTS_PER_EXAMPLE):
            data = mutate(BASES[base], plan, reseal, rng)
            try:
                outcomes[consume(data)] += 1
            except Exception as exc:  # noqa: BLE001 - an escape is exactly what this test looks for
                escapes.append(f"base {base} seed {seed} mutant {k} plan {plan} reseal {reseal}: "
                               f"{type(exc).__name__}: {exc}"[:400])
                outcomes["ESCAPE"] += 1

    run()
    total = sum(outcomes.values())
    print(f"\nfuzz: {total} mutated artifacts, outcomes {dict(sorted(outcomes.items()))}")
    assert not escapes, f"{len(escapes)} escapes, first: {escapes[:3]}"
    assert total >= examples * MUTANTS_PER_EXAMPLE
    # the mutations reach deep: schema, tiling and checksum rejections all occur, and some mutants are valid
    for name in ("ChecksumError", "SchemaError", "ManifestError", "SectionTableError", "CodecError", "accepted"):
        assert outcomes[name] > 0, f"no mutant ended in {name}: {dict(outcomes)}"


def test_atheris_target_runs_without_atheris():
    """bench/fuzz_atheris.py's seeds are valid and its target accepts them and re-sealed mutants quietly."""
    import importlib.util

    from packer.reader import parse_artifact

    path = Path(__file__).resolve().parents[2] / "bench" / "fuzz_atheris.py"
    spec = importlib.util.spec_from_file_location("fuzz_atheris", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seeds = mod.seed_artifacts()
    rng = np.random.default_rng(0)
    for seed in seeds:
        parse_artifact(seed)
        mod.test_one_input(seed)
        for _ in range(20):
            b = bytearray(seed)
            _flip(b, rng)
            mod.test_one_input(mod.reseal(bytes(b), fix_crcs=bool(rng.integers(0, 2))))
