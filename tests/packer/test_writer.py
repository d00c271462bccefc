"""The writer (packer/writer.py): deterministic bytes in both format versions, the section table it builds, and
what it refuses to write (an input path, a body that carries its own section table, bytes the reader rejects)."""

import numpy as np
import pytest
from test_reader import body, sections

from common.errors import ArtifactError, FormatError, OutputError
from packer import constants as C
from packer.reader import read_artifact
from packer.writer import SectionSpec, build_artifact, write_artifact


def test_deterministic_bytes_in_both_versions():
    for minor in (0, 1):
        a = build_artifact(body(), sections()[0], minor=minor)
        assert a == build_artifact(body(), sections()[0], minor=minor)
        assert read_artifact(a).version == (1, minor)
    assert build_artifact(body(), sections()[0]) == build_artifact(body(), sections()[0], minor=C.FORMAT_MINOR)


def test_section_table_tiles_the_payload_in_the_order_given():
    art = read_artifact(build_artifact(body(), sections()[0]))
    offsets = [s.offset for s in art.sections]
    assert offsets == sorted(offsets) and [s.name for s in art.sections] == ["w/codes", "w/scales"]
    assert all(a.offset + a.stored_bytes == b.offset for a, b in zip(art.sections, art.sections[1:]))
    assert art.section("w/scales").codec == "raw" and art.section("w/codes").codec == "zstd"


def test_what_the_writer_refuses(tmp_path):
    with pytest.raises(FormatError, match="must not carry 'sections'"):
        build_artifact(dict(body(), sections=[]), sections()[0])
    with pytest.raises(FormatError, match="cannot write format version 1.7"):
        build_artifact(body(), sections()[0], minor=7)
    bad = dict(body(), tensors=[{"name": "w", "shape": [4, 8], "format": "int99_row",
                                 "sections": {"codes": "w/codes", "scales": "w/scales"}}])
    with pytest.raises(FormatError, match="unknown tensor format"):
        build_artifact(bad, sections()[0])
    data = build_artifact(body(), sections()[0])
    src = tmp_path / "in.gpk"
    src.write_bytes(b"INPUT")
    with pytest.raises(OutputError, match="same file as input"):
        write_artifact(src, data, inputs=[src])
    with pytest.raises(ArtifactError):
        write_artifact(tmp_path / "x.gpk", data[:-1])                    # the reader would reject it
    assert src.read_bytes() == b"INPUT" and not (tmp_path / "x.gpk").exists()


def test_an_overlong_manifest_is_refused():
    rng = np.random.default_rng(0)
    big = dict(body(), options={"blob": rng.integers(0, 10**9, 200_000).tolist()})
    with pytest.raises(FormatError, match="over the 1048576-byte limit"):
        build_artifact(big, [SectionSpec("w/codes", b"\0" * 32, "raw", {"dtype": "int8", "shape": [4, 8], "bits": 6}),
                             sections()[0][1]])
