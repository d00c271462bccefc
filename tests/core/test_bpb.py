"""Byte counting and bits per byte, checked by hand against the pieces of real tokenizers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.errors import DataError
from core.bpb import bits_per_byte, target_byte_counts
from core.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def official(shared_data):
    path = shared_data / "tokenizers" / "fineweb_1024_bpe.model"
    if not path.is_file():
        pytest.skip(f"official Parameter Golf tokenizer {path} is absent")
    return Tokenizer.load(path)


def _doc_counts(tok: Tokenizer, text: str) -> tuple[list[str], list[int]]:
    """Pieces of `text` and the bytes counted for each, scored as a document right after BOS."""
    ids = np.array([tok.bos_id] + tok.encode(text), dtype=np.int64)
    counts = target_byte_counts(ids[:-1], ids[1:], tok.byte_tables())
    assert counts.dtype == np.int64
    return [tok.piece(i) for i in ids[1:]], counts.tolist()


def _by_hand(pieces: list[str]) -> list[int]:
    """An independent statement of the rule: a byte-fallback piece '<0xNN>' is one byte; otherwise the UTF-8
    length of the piece with '▁' read as a space, except that a '▁' opening the document is not a byte."""
    out = []
    for k, piece in enumerate(pieces):
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            out.append(1)
            continue
        text = piece.replace("\u2581", " ")
        if k == 0 and text.startswith(" "):
            text = text[1:]
        out.append(len(text.encode("utf-8")))
    return out


def test_hello_world_with_official_tokenizer(official):
    pieces, counts = _doc_counts(official, "Hello world 123")
    assert pieces == ["H", "ell", "o", "\u2581wor", "ld", "\u2581", "1", "2", "3"]
    # H=1 ell=3 o=1, '▁wor' = space + 'wor' = 4, ld=2, '▁' alone = the space = 1, then one per digit
    assert counts == [1, 3, 1, 4, 2, 1, 1, 1, 1]
    assert sum(counts) == len("Hello world 123") == 15  # ASCII: one byte per character


def test_byte_fallback_and_multibyte_text_with_official_tokenizer(official):
    text = "café 東京"
    pieces, counts = _doc_counts(official, text)
    assert any(p.startswith("<0x") for p in pieces), pieces  # CJK is not in sp1024: byte fallback
    assert counts == _by_hand(pieces)
    assert sum(counts) == len(text.encode()) == 12


def test_official_tables_match_the_documented_layout(official):
    t = official.byte_tables()
    assert t.base_bytes.dtype == np.int16 and t.base_bytes.shape == (1024,)
    assert t.has_leading_space.dtype == np.bool_ and t.is_boundary.dtype == np.bool_
    assert t.is_boundary[:4].all() and (t.base_bytes[:4] == 0).all()  # pad, bos, eos, unk
    assert not t.is_boundary[4:].any()
    assert (t.base_bytes[4:260] == 1).all() and not t.has_leading_space[4:260].any()  # byte pieces
    assert official.piece(939) == "\u2581" and t.has_leading_space[939] and t.base_bytes[939] == 0
    padded = official.byte_tables(vocab_size=1030)
    assert padded.base_bytes.shape == (1030,) and padded.is_boundary[1024:].all()


def test_leading_space_after_boundary_is_not_a_byte(official):
    t = official.byte_tables()
    space_piece = 939
    word = official.encode("a the")[-1]
    assert official.piece(word).startswith("\u2581")
    bos, letter = official.bos_id, official.encode("a")[0]
    counts = target_byte_counts(np.array([bos, letter, bos]), np.array([word, word, space_piece]), t)
    base = int(t.base_bytes[word])
    assert counts.tolist() == [base, base + 1, 0]


def test_small_project_tokenizer_by_hand(small_tokenizer):
    for text in ["Hello world 123", "def f(x):  return x**2 # naïve", "Ω≈ç √∫ ok"]:
        normalized = small_tokenizer.decode(small_tokenizer.encode(text))
        pieces, counts = _doc_counts(small_tokenizer, text)
        assert counts == _by_hand(pieces), (text, pieces)
        assert sum(counts) == len(normalized.encode("utf-8"))


def _plain_document(default_docs) -> str:
    """A real document reduced to text the normalizer leaves alone: printable ASCII, single spaces."""
    doc = next(d for d in default_docs if d.name == "topic:assert")
    text = " ".join("".join(c for c in doc.text if c.isascii() and (c.isprintable() or c.isspace())).split())
    assert len(text) > 500
    return text


def _check_whole_document(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text  # precondition: normalization is the identity here
    _, counts = _doc_counts(tok, text)
    assert sum(counts) == len(text.encode("utf-8"))


def test_whole_document_bytes_equal_utf8_length_small(small_tokenizer, default_docs):
    _check_whole_document(small_tokenizer, _plain_document(default_docs))


def test_whole_document_bytes_equal_utf8_length_official(official, default_docs):
    _check_whole_document(official, _plain_document(default_docs))


def test_bits_per_byte():
    assert bits_per_byte(30 * math.log(2.0), 15) == pytest.approx(2.0)
    assert bits_per_byte(0.0, 7) == 0.0
    with pytest.raises(DataError, match="0 bytes"):
        bits_per_byte(1.0, 0)


def test_mismatched_shapes_and_foreign_ids_are_rejected(small_tokenizer):
    t = small_tokenizer.byte_tables()
    with pytest.raises(DataError, match="shape"):
        target_byte_counts(np.array([1, 2]), np.array([1]), t)
    with pytest.raises(DataError, match="outside"):
        target_byte_counts(np.array([1]), np.array([small_tokenizer.vocab_size]), t)
