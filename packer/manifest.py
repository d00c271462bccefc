"""The manifest: JSON encoding (canonical, deterministic) and its schema check.

The manifest is one JSON object. Keys the reader relies on are checked here, by type and range, before any
section is decoded: `sections` (the section table), `tensors` (the tensor table), `model`, `routing`,
`tokenizer`, `tool`. Anything else (options, provenance) is carried as is. Must not import torch.
"""

from __future__ import annotations

import json
import math

from packer import constants as C
from packer.errors import FormatError


def encode_manifest(manifest: dict) -> bytes:
    """Canonical bytes: sorted keys, no whitespace, ASCII only. Same dict -> same bytes."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _depth(obj, limit: int, depth: int = 0) -> None:
    if depth > limit:
        raise FormatError(f"manifest JSON nests deeper than {limit} levels")
    if isinstance(obj, dict):
        for v in obj.values():
            _depth(v, limit, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _depth(v, limit, depth + 1)


def _reject_constant(name: str):
    raise FormatError(f"manifest JSON contains the non-standard constant {name}")


def decode_manifest(raw: bytes) -> dict:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FormatError(f"manifest is not ASCII JSON (byte {exc.start} of the manifest)") from None
    # Cheap pre-check on nesting before the recursive parser sees it.
    depth = max_depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            max_depth = max(max_depth, depth)
            if max_depth > C.MAX_JSON_DEPTH:
                raise FormatError(f"manifest JSON nests deeper than {C.MAX_JSON_DEPTH} levels")
        elif ch in "]}":
            depth -= 1
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FormatError(f"manifest must be a JSON object, got {type(obj).__name__}")
    _depth(obj, C.MAX_JSON_DEPTH)
    validate_manifest(obj)
    return obj


def _need(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise FormatError(f"manifest {where}: {what}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_name(name, where: str) -> None:
    _need(isinstance(name, str) and 0 < len(name) <= C.MAX_NAME_CHARS and name.isprintable(), where,
          f"name must be a printable string of 1..{C.MAX_NAME_CHARS} characters, got {name!r:.80}")


def element_count(shape, where: str) -> int:
    """Product of a shape list, checked: non-negative ints, total within MAX_TENSOR_ELEMENTS."""
    _need(isinstance(shape, list) and len(shape) <= 8 and all(_is_int(d) and d >= 0 for d in shape), where,
          f"shape must be a list of at most 8 non-negative integers, got {shape!r:.80}")
    n = math.prod(shape)
    _need(n <= C.MAX_TENSOR_ELEMENTS, where, f"shape {shape} has {n} elements, over the limit "
          f"{C.MAX_TENSOR_ELEMENTS}")
    return n


def validate_sections(sections) -> None:
    _need(isinstance(sections, list) and len(sections) <= C.MAX_SECTIONS, "sections",
          f"must be a list of at most {C.MAX_SECTIONS} entries")
    seen: set[str] = set()
    for i, s in enumerate(sections):
        where = f"sections[{i}]"
        _need(isinstance(s, dict), where, "must be an object")
        _need(set(s) == {"name", "codec", "params", "offset", "stored_bytes", "raw_bytes", "crc32"}, where,
              f"must have exactly name, codec, params, offset, stored_bytes, raw_bytes, crc32; has {sorted(s)}")
        _check_name(s["name"], where)
        _need(s["name"] not in seen, where, f"duplicate section name {s['name']!r}")
        seen.add(s["name"])
        _need(isinstance(s["codec"], str), where, "codec must be a string")
        _need(isinstance(s["params"], dict), where, "params must be an object")
        for key in ("offset", "stored_bytes", "raw_bytes", "crc32"):
            _need(_is_int(s[key]) and s[key] >= 0, f"{where}.{key}", f"must be a non-negative integer, "
                  f"got {s[key]!r:.40}")
        _need(s["crc32"] < 2**32, f"{where}.crc32", "must fit in 32 bits")
        p = s["params"]
        if "dtype" in p or "shape" in p:
            _need(p.get("dtype") in C.DTYPES, f"{where}.params.dtype",
                  f"must be one of {sorted(C.DTYPES)}, got {p.get('dtype')!r:.40}")
            n = element_count(p.get("shape"), f"{where}.params.shape")
            _need(n * C.DTYPES[p["dtype"]] == s["raw_bytes"], f"{where}.raw_bytes",
                  f"{s['raw_bytes']} does not equal {n} elements x {C.DTYPES[p['dtype']]} bytes of {p['dtype']}")


def validate_tensors(tensors, section_names: set[str]) -> None:
    _need(isinstance(tensors, list), "tensors", "must be a list")
    names: set[str] = set()
    for i, t in enumerate(tensors):
        where = f"tensors[{i}]"
        _need(isinstance(t, dict), where, "must be an object")
        _check_name(t.get("name"), where)
        where = f"tensor {t['name']!r}"
        _need(t["name"] not in names, where, "is listed twice")
        names.add(t["name"])
        element_count(t.get("shape"), f"{where}.shape")
        if "alias_of" in t:
            _need(set(t) == {"name", "shape", "alias_of"}, where, f"an alias has only name, shape, alias_of; "
                  f"has {sorted(t)}")
            continue
        _need(t.get("format") in C.TENSOR_FORMATS, f"{where}.format",
              f"unknown tensor format {t.get('format')!r:.40}; this reader knows {sorted(C.TENSOR_FORMATS)}")
        secs = t.get("sections")
        _need(isinstance(secs, dict) and secs, f"{where}.sections", "must be a non-empty object role -> section")
        for role, sec in secs.items():
            _need(isinstance(role, str) and sec in section_names, f"{where}.sections.{role}",
                  f"names section {sec!r:.60}, which is not in the section table")
    for t in tensors:
        if "alias_of" in t:
            target = next((u for u in tensors if u["name"] == t["alias_of"]), None)
            _need(target is not None and "alias_of" not in target, f"tensor {t['name']!r}.alias_of",
                  f"must name a stored tensor, got {t['alias_of']!r:.60}")
            _need(target["shape"] == t["shape"], f"tensor {t['name']!r}.shape",
                  f"{t['shape']} differs from its alias target's {target['shape']}")


def validate_manifest(m: dict) -> None:
    for key, typ in (("sections", list), ("tensors", list), ("model", dict), ("routing", dict),
                     ("tokenizer", dict), ("tool", dict)):
        _need(isinstance(m.get(key), typ), key, f"is required and must be a JSON {typ.__name__}")
    validate_sections(m["sections"])
    validate_tensors(m["tensors"], {s["name"] for s in m["sections"]})
    _need(isinstance(m["model"].get("family"), str), "model.family", "must be a string")
    _need(isinstance(m["model"].get("config"), dict), "model.config", "must be an object")
