"""prepare_default_data end to end (files, counts, cache reuse and invalidation) and prepare_text_data."""

from __future__ import annotations

import json

import numpy as np

from core.corpus import split_documents
from core.dataset import prepare_default_data, prepare_text_data
from core.shards import find_shards, load_tokens, read_shard, write_shard
from core.tokenizer import Tokenizer


def test_prepare_default_data_builds_reuses_and_rebuilds(tmp_path, default_docs):
    out = tmp_path / "data"
    b = prepare_default_data(out, progress=False)
    assert not b.reused
    assert sorted(p.name for p in out.iterdir()) == ["pydocs_1024_bpe.model", "pydocs_data.json",
                                                     "pydocs_train_000000.bin", "pydocs_val_000000.bin"]
    train, val = split_documents(default_docs)
    assert (b.train_docs, b.val_docs) == (len(train), len(val))
    assert b.train_bytes == sum(len(d.text.encode("utf-8")) for d in train)
    tok = Tokenizer.load(b.tokenizer_path)
    assert tok.vocab_size == 1024
    train_tokens = load_tokens(find_shards(out, "train"))
    assert len(train_tokens) == b.train_tokens and len(read_shard(b.val_shards[0])) == b.val_tokens
    assert int((train_tokens == tok.bos_id).sum()) == b.train_docs  # one BOS per document
    stamp = json.loads((out / "pydocs_data.json").read_text())
    assert stamp["tokenizer_sha256"] == tok.sha256 and stamp["val_tokens"] == b.val_tokens

    again = prepare_default_data(out, progress=False)
    assert again.reused and again == type(b)(**{**b.__dict__, "reused": True})

    write_shard(b.val_shards[0], np.array([1, 2, 3]))  # tampered data is rebuilt, not trusted
    rebuilt = prepare_default_data(out, progress=False)
    assert not rebuilt.reused and len(read_shard(b.val_shards[0])) == b.val_tokens
    assert Tokenizer.load(rebuilt.tokenizer_path).sha256 == tok.sha256  # deterministic retraining


def test_prepare_text_data(tmp_path, small_tokenizer):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "Hello world"}\n{"text": "x = 1"}\n', encoding="utf-8")
    paths = prepare_text_data([src], small_tokenizer.path, tmp_path / "out", "mine", progress=False)
    assert [p.name for p in paths] == ["mine_val_000000.bin"]
    tokens = read_shard(paths[0]).tolist()
    bos = small_tokenizer.bos_id
    assert tokens == [bos] + small_tokenizer.encode("Hello world") + [bos] + small_tokenizer.encode("x = 1")
    train = prepare_text_data([src], small_tokenizer.path, tmp_path / "out", "mine", split="train",
                              progress=False)
    assert find_shards(tmp_path / "out", "train") == train


def test_data_command_takes_the_embedded_corpus_split(tmp_path, small_tokenizer):
    from core.dataset import data_job
    from core.shards import read_shard

    rep = data_job([], small_tokenizer.path, tmp_path, "pd", "val", default_corpus=True, progress=False)
    assert rep["split"] == "val" and rep["tokens"] > 1000
    assert len(read_shard(tmp_path / "pd_val_000000.bin")) == rep["tokens"]
