"""The manifest (packer/manifest.py): one canonical spelling, storage in 1.0 (JSON) and 1.1 (brotli), the schema's
checks on a valid body, and made_by."""

import json

import pytest

from common.errors import ManifestError, SchemaError
from packer.manifest import (
    decode_manifest,
    encode_manifest,
    load_manifest,
    made_by,
    store_manifest,
    validate_manifest,
)


def manifest() -> dict:
    return {"model": {"family": "recurrent", "config": {"d_model": 8}}, "routing": {"policy": "uniform", "passes": 2},
            "tokenizer": {"sha256": None, "vocab_size": 8}, "tool": {"name": "golfpack", "version": "0.1.0"},
            "options": {"b": 1, "a": [1.5, "x"]}, "sections": [], "tensors": []}


def test_canonical_encoding_round_trips_and_has_one_spelling():
    raw = encode_manifest(manifest())
    assert raw == json.dumps(manifest(), sort_keys=True, separators=(",", ":")).encode("ascii")
    assert decode_manifest(raw) == manifest()
    spaced = json.dumps(manifest(), sort_keys=True).encode()
    with pytest.raises(ManifestError, match="not canonical"):
        decode_manifest(spaced)


def test_storage_by_version():
    raw = encode_manifest(manifest())
    assert store_manifest(raw, 0) == raw and load_manifest(raw, 0) == raw
    stored = store_manifest(raw, 1)
    assert stored != raw and load_manifest(stored, 1) == raw
    with pytest.raises(ManifestError, match="cannot be decoded"):
        load_manifest(stored[:-1], 1)


def test_schema_checks_name_the_field():
    validate_manifest(manifest())
    for edit, field in ((lambda m: m.pop("tool"), "tool"), (lambda m: m["routing"].update(passes=0), "routing.passes"),
                        (lambda m: m["tokenizer"].update(sha256="xyz"), "tokenizer.sha256"),
                        (lambda m: m["routing"].update(target_fraction=1.5), "routing.target_fraction")):
        m = manifest()
        edit(m)
        with pytest.raises(SchemaError, match=field.replace(".", r"\.")):
            validate_manifest(m)


def test_made_by_reports_the_tool_and_options():
    assert made_by(manifest()) == {"tool": "golfpack", "version": "0.1.0", "options": {"b": 1, "a": [1.5, "x"]}}
