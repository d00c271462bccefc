"""SentencePiece training: reproducible bytes, Parameter Golf's settings, clean file output, loading errors."""

from __future__ import annotations

import hashlib
import os

import pytest

from common.errors import DataError
from core.tokenizer import Tokenizer, train_tokenizer


def test_two_trainings_give_identical_bytes_and_write_only_the_model(tmp_path, default_docs, small_tokenizer):
    cwd_before = sorted(os.listdir(os.getcwd()))
    a = train_tokenizer((d.text for d in default_docs[:80]), tmp_path / "a.model", vocab_size=400)
    b = train_tokenizer([d.text for d in default_docs[:80]], tmp_path / "b.model", vocab_size=400)
    assert a.read_bytes() == b.read_bytes() == small_tokenizer.path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.model", "b.model"]
    assert sorted(os.listdir(os.getcwd())) == cwd_before
    assert Tokenizer.load(a).sha256 == hashlib.sha256(a.read_bytes()).hexdigest()


def test_settings_special_ids_byte_fallback_digits_no_dummy_prefix(small_tokenizer):
    tok = small_tokenizer
    assert tok.vocab_size == 400
    assert [tok.piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert tok.bos_id == 1 and tok.eos_id == 2
    assert [tok.piece(i) for i in (4, 5, 259)] == ["<0x00>", "<0x01>", "<0xFF>"]
    ids = tok.encode("東")  # not in the training slice: byte fallback, never <unk>
    assert [tok.piece(i) for i in ids] == ["<0xE6>", "<0x9D>", "<0xB1>"]
    assert 3 not in tok.encode("東京 ✓ ŝ")
    assert [tok.piece(i) for i in tok.encode("2024")] == ["2", "0", "2", "4"]  # split_digits
    assert not tok.piece(tok.encode("the")[0]).startswith("\u2581")  # add_dummy_prefix off
    assert tok.decode(tok.encode("a\n\tb  c")) == "a b c"  # nmt_nfkc + whitespace collapsing


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing\.model"):
        Tokenizer.load(tmp_path / "missing.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a sentencepiece model at all")
    with pytest.raises(DataError, match=r"junk\.model is not a SentencePiece model"):
        Tokenizer.load(junk)


def test_training_rejects_empty_text_and_tiny_vocab(tmp_path):
    with pytest.raises(DataError, match="no text"):
        train_tokenizer(["", "   \n\n "], tmp_path / "e.model", vocab_size=400)
    with pytest.raises(DataError, match="vocab_size"):
        train_tokenizer(["hello"], tmp_path / "v.model", vocab_size=100)
    assert list(tmp_path.iterdir()) == []
