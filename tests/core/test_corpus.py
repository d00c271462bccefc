"""The embedded default corpus (deterministic, clean split) and reading user text files."""

from __future__ import annotations

import gzip
import json

import pytest

from common.errors import DataError
from core.corpus import Document, default_corpus, load_text_documents, split_documents


def test_default_corpus_is_deterministic_and_well_formed(default_docs):
    again = default_corpus()  # a second, independent worker process
    assert again == default_docs
    names = [d.name for d in default_docs]
    assert len(set(names)) == len(names)
    topics = [n for n in names if n.startswith("topic:")]
    modules = [n for n in names if n.startswith("module:")]
    assert topics == sorted(topics) and modules == sorted(modules) and names == topics + modules
    assert len(topics) > 50 and len(modules) > 200
    assert all(len(d.text) >= 200 for d in default_docs)
    for excluded in ("this", "antigravity", "idlelib", "tkinter", "test"):
        assert not any(n == f"module:{excluded}" or n.startswith(f"module:{excluded}.") for n in names)
    assert not any("._" in n or n.startswith("module:_") for n in names)
    assert "module:json" in names and "topic:assert" in names
    total_bytes = sum(len(d.text.encode("utf-8")) for d in default_docs)
    assert 1_000_000 < total_bytes < 5_000_000


def test_split_is_disjoint_stable_and_about_five_percent(default_docs):
    train, val = split_documents(default_docs)
    assert {d.name for d in train}.isdisjoint({d.name for d in val})
    assert len(train) + len(val) == len(default_docs)
    assert 0.02 < len(val) / len(default_docs) < 0.09
    # a document's side depends on its name only: adding documents moves nobody
    extra = [Document(f"extra:{i}", "x" * 300) for i in range(50)]
    _, val2 = split_documents(extra + default_docs[::-1])
    assert {d.name for d in val} == {d.name for d in val2} - {d.name for d in extra}
    with pytest.raises(DataError, match="val_fraction"):
        split_documents(default_docs, 1.5)


def test_shared_text_files(shared_data):
    text = shared_data / "text"
    c4 = load_text_documents([text / "c4"])
    assert len(c4) == 40 and all(d.text.strip() for d in c4)
    assert c4[0].name.endswith("c4-sample.01.json.gz:1")
    ccnet = load_text_documents([text / "ccnet"])
    assert len(ccnet) == 20
    stories = load_text_documents([text / "tinystories_val_100.txt"])
    assert len(stories) == 100
    assert not any("<|endoftext|>" in d.text for d in stories)
    [wiki] = load_text_documents([text / "wikitext2_test.raw"])     # WikiText's .raw is plain text, one document
    assert wiki.text == (text / "wikitext2_test.raw").read_text(encoding="utf-8") and len(wiki.text) > 1_000_000


def test_txt_jsonl_gz_and_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("one whole document\nwith two lines\n", encoding="utf-8")
    (tmp_path / "b" / "s.txt").write_text("first\n<|endoftext|>\nsecond\n<|endoftext|>\n", encoding="utf-8")
    (tmp_path / "b" / "r.jsonl").write_text('{"text": "alpha"}\n\n{"text": "beta", "id": 2}\n', encoding="utf-8")
    with gzip.open(tmp_path / "c.json.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "gamma"}) + "\n")
    docs = load_text_documents([tmp_path])
    assert [d.text for d in docs] == ["one whole document\nwith two lines\n", "alpha", "beta", "first",
                                      "second", "gamma"]
    assert docs[2].name.endswith("r.jsonl:3")


def test_malformed_json_and_missing_text_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": broken\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        load_text_documents([bad])
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"missing\.jsonl:2: no 'text' field"):
        load_text_documents([missing])
    with pytest.raises(DataError, match="unsupported file type"):
        load_text_documents([tmp_path / "missing.jsonl", _touch(tmp_path / "x.csv")])
    with pytest.raises(DataError, match="no such file"):
        load_text_documents([tmp_path / "nope.txt"])


def _touch(path):
    path.write_text("a,b\n", encoding="utf-8")
    return path
