"""The manifest: canonical JSON encoding and the schema check every reader and writer goes through.

The manifest is one JSON object. Decoding checks, before any section is touched: ASCII, nesting depth,
number-token lengths, no duplicate keys, no NaN/Infinity, canonical form (re-encoding gives the same bytes,
so a file has exactly one spelling), then the schema: `sections` (the section table), `tensors`, `model`,
`routing`, `tokenizer`, `tool`, and `options` when present. Codec and tensor-format names are checked
against the registries (packer.codecs.names(), packer.constants.TENSOR_FORMATS), never a list kept here.
Members it does not know are carried as they are. Every failure is one typed error (common.errors) naming
the field and the offending value. `store_manifest` / `load_manifest` map the JSON to and from the bytes a
format version keeps in the file (1.0: the JSON itself; 1.1: one brotli stream of it, decoded with bounded
output). Must not import torch, and must not decode sections.
"""

from __future__ import annotations

import json
import math
import re

from common.errors import CodecError, ManifestError, SchemaError, SizeError, UnknownFormatError
from packer import codecs
from packer import constants as C

SECTION_KEYS = frozenset({"name", "codec", "params", "offset", "stored_bytes", "raw_bytes", "crc32"})
ALIAS_KEYS = frozenset({"name", "shape", "alias_of"})
MAX_PASSES = 1024
MAX_BITS = 8
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')      # one JSON string token (linear: no nested repetition)


def encode_manifest(manifest: dict) -> bytes:
    """Canonical bytes: sorted keys, no whitespace, ASCII only. Same dict -> same bytes."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def store_manifest(mjson: bytes, minor: int) -> bytes:
    """The manifest's stored bytes in format 1.<minor> (C.MANIFEST_STORAGE): the JSON, or brotli-11 of it."""
    if C.MANIFEST_STORAGE[minor] == "brotli":
        return codecs.brotli_encode(mjson, {})
    return bytes(mjson)


def load_manifest(stored: bytes, minor: int) -> bytes:
    """The manifest JSON from its stored bytes: 1.1's brotli stream must be complete, with nothing after it,
    and decode to at most MAX_MANIFEST_BYTES (decoding stops there: a small stream cannot expand past it)."""
    if C.MANIFEST_STORAGE[minor] != "brotli":
        return bytes(stored)
    try:
        return codecs.brotli_decode_at_most(stored, C.MAX_MANIFEST_BYTES)
    except CodecError as exc:
        raise ManifestError(f"manifest (format 1.{minor}, {len(stored)} stored bytes at offset {C.HEADER_BYTES}) "
                            f"cannot be decoded: {exc}; the decoded JSON is capped at {C.MAX_MANIFEST_BYTES} "
                            f"bytes") from None


def _fail(where: str, what: str, cls: type = SchemaError) -> None:
    raise cls(f"manifest {where}: {what}")


def _need(cond: bool, where: str, what: str, cls: type = SchemaError) -> None:
    if not cond:
        _fail(where, what, cls)


# --- bytes -> object ---------------------------------------------------------------------------------------
_BRACKET = re.compile(r"[\[\]{}]")
_LONG_NUMBER = re.compile(rf"[-+0-9.eE]{{{C.MAX_NUMBER_CHARS + 1},}}")


def _check_tokens(text: str) -> None:
    """Nesting depth and number-token lengths, counted outside strings, before the parser sees the text."""
    bare = _STRING.sub('""', text)
    long = _LONG_NUMBER.search(bare)
    if long:
        _fail("JSON", f"number token of {len(long.group())} characters is longer than {C.MAX_NUMBER_CHARS}: "
              f"{long.group()[:40]}...", ManifestError)
    depth = 0
    for ch in _BRACKET.findall(bare):
        depth += 1 if ch in "[{" else -1
        if depth > C.MAX_JSON_DEPTH:
            _fail("JSON", f"nests deeper than {C.MAX_JSON_DEPTH} levels", ManifestError)


def _reject_constant(name: str):
    _fail("JSON", f"contains the non-standard constant {name}", ManifestError)


def _no_duplicates(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        _fail("JSON", f"an object has the key {dup!r:.80} twice", ManifestError)
    return obj


def decode_manifest(raw: bytes) -> dict:
    """The manifest object from its bytes, checked (JSON limits, canonical form, schema)."""
    raw = bytes(raw)
    _need(len(raw) <= C.MAX_MANIFEST_BYTES, "length", f"{len(raw)} bytes exceeds the "
          f"{C.MAX_MANIFEST_BYTES}-byte cap", ManifestError)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest is not ASCII JSON: byte 0x{raw[exc.start]:02x} at manifest offset "
                            f"{exc.start}") from None
    _check_tokens(text)
    try:
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    _need(isinstance(obj, dict), "top level", f"must be a JSON object, got {type(obj).__name__}", ManifestError)
    try:
        canonical = encode_manifest(obj)
    except ValueError:   # only out-of-range floats: 1e999 parses as inf, which JSON cannot spell
        _fail("JSON", "contains a number that is not finite (too large for a float)", ManifestError)
    if canonical != raw:
        at = next((i for i, (a, b) in enumerate(zip(canonical, raw)) if a != b), min(len(canonical), len(raw)))
        _fail("encoding", f"is not canonical JSON (sorted keys, no whitespace, shortest escapes); first "
              f"difference at manifest offset {at}: {raw[at:at + 20]!r}", ManifestError)
    validate_manifest(obj)
    return obj


# --- schema helpers ----------------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_name(name, where: str, what: str = "name") -> None:
    _need(isinstance(name, str) and 0 < len(name) <= C.MAX_NAME_CHARS and name.isprintable(), where,
          f"{what} must be a printable string of 1..{C.MAX_NAME_CHARS} characters, got {name!r:.80}")


def _check_count(v, where: str, limit: int) -> int:
    _need(_is_int(v) and 0 <= v <= limit, where, f"must be an integer in 0..{limit}, got {v!r:.40}")
    return v


def element_count(shape, where: str) -> int:
    """Product of a shape list, checked: at most 8 non-negative ints, total within MAX_TENSOR_ELEMENTS."""
    _need(isinstance(shape, list) and len(shape) <= C.MAX_SHAPE_DIMS
          and all(_is_int(d) and d >= 0 for d in shape), where,
          f"shape must be a list of at most {C.MAX_SHAPE_DIMS} non-negative integers, got {shape!r:.80}")
    n = math.prod(shape)   # at most 8 factors of at most MAX_NUMBER_CHARS digits each: cheap, exact
    _need(n <= C.MAX_TENSOR_ELEMENTS, where, f"shape {shape} has {n} elements, over the limit "
          f"{C.MAX_TENSOR_ELEMENTS}; refusing before allocating anything", SizeError)
    return n


# --- schema ------------------------------------------------------------------------------------------------
def _validate_params(p: dict, where: str, raw_bytes: int) -> None:
    if "dtype" in p or "shape" in p:
        _need(isinstance(p.get("dtype"), str) and p["dtype"] in C.DTYPES, f"{where}.dtype",
              f"must be one of {sorted(C.DTYPES)} (and given with shape), got {p.get('dtype')!r:.40}")
        n = element_count(p.get("shape"), f"{where}.shape")
        size = C.DTYPES[p["dtype"]]
        _need(n * size == raw_bytes, f"{where}", f"{n} elements x {size} bytes of {p['dtype']} = {n * size} "
              f"bytes, but the section declares raw_bytes {raw_bytes}", SizeError)
    if "bits" in p:
        _need(_is_int(p["bits"]) and 1 <= p["bits"] <= MAX_BITS, f"{where}.bits",
              f"must be an integer in 1..{MAX_BITS}, got {p['bits']!r:.40}")
    if "level" in p:
        _need(_is_int(p["level"]), f"{where}.level", f"must be an integer, got {p['level']!r:.40}")


def validate_sections(sections) -> None:
    _need(isinstance(sections, list) and len(sections) <= C.MAX_SECTIONS, "sections",
          f"must be a list of at most {C.MAX_SECTIONS} entries, got "
          f"{len(sections) if isinstance(sections, list) else type(sections).__name__}")
    seen: set[str] = set()
    known_codecs = codecs.names()
    total_raw = 0
    for i, s in enumerate(sections):
        where = f"sections[{i}]"
        _need(isinstance(s, dict), where, f"must be an object, got {type(s).__name__}")
        _need(set(s) == SECTION_KEYS, where, f"must have exactly {sorted(SECTION_KEYS)}; has {sorted(s)}")
        _check_name(s["name"], where)
        _need(s["name"] not in seen, where, f"duplicate section name {s['name']!r}")
        seen.add(s["name"])
        where = f"section {s['name']!r}"
        _need(isinstance(s["codec"], str), f"{where}.codec", f"must be a string, got {s['codec']!r:.40}")
        _need(s["codec"] in known_codecs, f"{where}.codec", f"unknown codec {s['codec']!r:.40}; this reader "
              f"knows {known_codecs}", CodecError)
        _need(isinstance(s["params"], dict), f"{where}.params", f"must be an object, got {s['params']!r:.40}")
        _check_count(s["offset"], f"{where}.offset", C.MAX_SECTION_RAW_BYTES * C.MAX_SECTIONS)
        _check_count(s["stored_bytes"], f"{where}.stored_bytes", C.MAX_SECTION_RAW_BYTES)
        _check_count(s["crc32"], f"{where}.crc32", 2**32 - 1)
        _need(_is_int(s["raw_bytes"]) and s["raw_bytes"] >= 0, f"{where}.raw_bytes",
              f"must be a non-negative integer, got {s['raw_bytes']!r:.40}")
        _need(s["raw_bytes"] <= C.MAX_SECTION_RAW_BYTES, f"{where}.raw_bytes", f"{s['raw_bytes']} is over the "
              f"per-section limit {C.MAX_SECTION_RAW_BYTES}; refusing before decoding", SizeError)
        _need(s["codec"] != "raw" or s["stored_bytes"] == s["raw_bytes"], f"{where}", f"codec 'raw' stores "
              f"bytes as they are, but stored_bytes {s['stored_bytes']} != raw_bytes {s['raw_bytes']}", SizeError)
        _validate_params(s["params"], f"{where}.params", s["raw_bytes"])
        total_raw += s["raw_bytes"]
    _need(total_raw <= C.MAX_TOTAL_RAW_BYTES, "sections", f"declare {total_raw} decoded bytes in all, over the "
          f"limit {C.MAX_TOTAL_RAW_BYTES}", SizeError)


def validate_tensors(tensors, section_names: set[str]) -> None:
    _need(isinstance(tensors, list) and len(tensors) <= C.MAX_TENSORS, "tensors",
          f"must be a list of at most {C.MAX_TENSORS} entries")
    by_name: dict[str, dict] = {}
    for i, t in enumerate(tensors):
        _need(isinstance(t, dict), f"tensors[{i}]", f"must be an object, got {type(t).__name__}")
        _check_name(t.get("name"), f"tensors[{i}]")
        where = f"tensor {t['name']!r}"
        _need(t["name"] not in by_name, where, "is listed twice")
        by_name[t["name"]] = t
        element_count(t.get("shape"), f"{where}.shape")
        if "alias_of" in t:
            _need(set(t) == ALIAS_KEYS, where, f"an alias has exactly name, shape, alias_of; has {sorted(t)}")
            _check_name(t["alias_of"], f"{where}.alias_of", "alias_of")
            continue
        fmt = t.get("format")
        _need(isinstance(fmt, str) and fmt in C.TENSOR_FORMATS, f"{where}.format",
              f"unknown tensor format {fmt!r:.40}; this reader knows {sorted(C.TENSOR_FORMATS)}",
              UnknownFormatError)
        if "scale" in t:    # informative: how the writer chose the scales (packer.constants.SCALE_METHODS)
            _need(isinstance(t["scale"], str) and t["scale"] in C.SCALE_METHODS, f"{where}.scale",
                  f"unknown scale method {t['scale']!r:.40}; known: {sorted(C.SCALE_METHODS)}")
        secs = t.get("sections")
        _need(isinstance(secs, dict) and secs, f"{where}.sections",
              f"must be a non-empty object role -> section name, got {secs!r:.60}")
        for role, sec in secs.items():
            _check_name(role, f"{where}.sections", "role")
            _need(isinstance(sec, str) and sec in section_names, f"{where}.sections.{role}",
                  f"names section {sec!r:.60}, which is not in the section table")
    for name, t in by_name.items():
        if "alias_of" in t:
            target = by_name.get(t["alias_of"])
            _need(target is not None and "alias_of" not in target, f"tensor {name!r}.alias_of",
                  f"must name a stored (not alias) tensor, got {t['alias_of']!r:.60}")
            _need(target["shape"] == t["shape"], f"tensor {name!r}.shape",
                  f"{t['shape']} differs from its alias target's {target['shape']}", SizeError)


def validate_routing(r: dict) -> None:
    """Basic types of the routing rule; members this reader does not know pass unchecked."""
    _check_name(r.get("policy"), "routing.policy", "policy")
    if "passes" in r:
        _need(_is_int(r["passes"]) and 1 <= r["passes"] <= MAX_PASSES, "routing.passes",
              f"must be an integer in 1..{MAX_PASSES}, got {r['passes']!r:.40}")
    if "threshold" in r:
        _need(_is_number(r["threshold"]), "routing.threshold", f"must be a number, got {r['threshold']!r:.40}")
    for key, v in r.items():
        if key.endswith("_fraction"):
            _need(_is_number(v) and 0 <= v <= 1, f"routing.{key}", f"must be a number in [0, 1], got {v!r:.40}")


def validate_manifest(m: dict) -> None:
    _need(isinstance(m, dict), "top level", f"must be an object, got {type(m).__name__}")
    for key, typ in (("sections", list), ("tensors", list), ("model", dict), ("routing", dict),
                     ("tokenizer", dict), ("tool", dict)):
        _need(isinstance(m.get(key), typ), key, f"is required and must be a JSON {typ.__name__}, got "
              f"{type(m.get(key)).__name__ if key in m else 'nothing'}")
    validate_sections(m["sections"])
    validate_tensors(m["tensors"], {s["name"] for s in m["sections"]})
    _check_name(m["model"].get("family"), "model.family", "family")
    _need(isinstance(m["model"].get("config"), dict), "model.config",
          f"must be an object, got {m['model'].get('config')!r:.40}")
    validate_routing(m["routing"])
    tok = m["tokenizer"]
    sha = tok.get("sha256")
    _need(sha is None or (isinstance(sha, str) and _SHA256_HEX.fullmatch(sha) is not None), "tokenizer.sha256",
          f"must be null or 64 lowercase hex digits, got {sha!r:.80}")
    _need(_is_int(tok.get("vocab_size")) and 1 <= tok["vocab_size"] <= C.MAX_TENSOR_ELEMENTS,
          "tokenizer.vocab_size", f"must be a positive integer, got {tok.get('vocab_size')!r:.40}")
    _check_name(m["tool"].get("name"), "tool.name", "name")
    _check_name(m["tool"].get("version"), "tool.version", "version")
    if "options" in m:
        _need(isinstance(m["options"], dict), "options", f"must be an object, got {m['options']!r:.40}")


def made_by(m: dict) -> dict:
    """How the file was made, for reports: the writing tool, its version, and the options it recorded."""
    return {"tool": m["tool"].get("name"), "version": m["tool"].get("version"), "options": m.get("options")}
