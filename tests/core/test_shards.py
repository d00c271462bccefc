"""Parameter Golf token shards: round trip, golden header bytes, every malformed-file error, finding shards."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from common.errors import DataError, ShardError
from core.corpus import Document
from core.shards import (
    document_starts,
    encode_documents,
    find_shards,
    load_tokens,
    read_shard,
    write_shard,
    write_split,
)


def _raw_shard(path, ints: list[int], tokens: bytes) -> None:
    header = struct.pack("<256i", *(ints + [0] * (256 - len(ints))))
    path.write_bytes(header + tokens)


def test_round_trip_and_golden_layout(tmp_path):
    tokens = np.array([1, 0, 65535, 1023, 7], dtype=np.int64)
    path = tmp_path / "x_val_000000.bin"
    write_shard(path, tokens)
    data = path.read_bytes()
    assert len(data) == 1024 + 2 * 5
    assert struct.unpack_from("<3i", data, 0) == (20240520, 1, 5)
    assert data[12:1024] == bytes(1012)
    assert data[1024:] == struct.pack("<5H", 1, 0, 65535, 1023, 7)
    back = read_shard(path)
    assert back.dtype == np.uint16
    assert back.tolist() == tokens.tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["x_val_000000.bin"]  # no temp file left behind


def test_empty_shard_round_trip(tmp_path):
    write_shard(tmp_path / "e.bin", np.zeros(0, dtype=np.uint16))
    assert read_shard(tmp_path / "e.bin").size == 0


@pytest.mark.parametrize("bad", [-1, 65536])
def test_write_rejects_tokens_outside_uint16(tmp_path, bad):
    with pytest.raises(DataError, match=str(bad)):
        write_shard(tmp_path / "bad.bin", np.array([1, bad]))
    assert not (tmp_path / "bad.bin").exists()


def test_truncated_header(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(struct.pack("<3i", 20240520, 1, 0))
    with pytest.raises(ShardError, match=r"short\.bin.*12 bytes.*header"):
        read_shard(path)


def test_bad_magic(tmp_path):
    path = tmp_path / "magic.bin"
    _raw_shard(path, [12345, 1, 1], b"\x01\x00")
    with pytest.raises(ShardError, match=r"magic\.bin.*bad magic 12345"):
        read_shard(path)


def test_unsupported_version(tmp_path):
    path = tmp_path / "ver.bin"
    _raw_shard(path, [20240520, 2, 1], b"\x01\x00")
    with pytest.raises(ShardError, match=r"ver\.bin.*unsupported version 2"):
        read_shard(path)


@pytest.mark.parametrize("count, payload", [(3, b"\x01\x00\x02\x00"), (1, b"\x01\x00\x02\x00")])
def test_size_mismatch(tmp_path, count, payload):
    path = tmp_path / "size.bin"
    _raw_shard(path, [20240520, 1, count], payload)
    with pytest.raises(ShardError, match=rf"size\.bin.*1028 bytes.*says {count} tokens"):
        read_shard(path)


def test_negative_count(tmp_path):
    path = tmp_path / "neg.bin"
    _raw_shard(path, [20240520, 1, -4], b"")
    with pytest.raises(ShardError, match=r"neg\.bin.*negative token count -4"):
        read_shard(path)


def test_find_shards_on_folder_and_file(tmp_path):
    for name in ["d_val_000001.bin", "d_val_000000.bin", "d_train_000000.bin", "notes_val.txt"]:
        write_shard(tmp_path / name, np.array([1, 2])) if name.endswith(".bin") else (tmp_path / name).write_text("x")
    assert [p.name for p in find_shards(tmp_path, "val")] == ["d_val_000000.bin", "d_val_000001.bin"]
    assert find_shards(tmp_path / "d_train_000000.bin", "val") == [tmp_path / "d_train_000000.bin"]
    with pytest.raises(DataError, match=r"\*_test_\*\.bin"):
        find_shards(tmp_path, "test")
    with pytest.raises(DataError, match="no such"):
        find_shards(tmp_path / "missing", "val")


def test_write_split_shards_load_back_in_order_and_drops_stale(tmp_path):
    tokens = np.arange(10, dtype=np.uint16)
    paths = write_split(tokens, tmp_path, "n", "train", max_tokens_per_shard=4)
    assert [p.name for p in paths] == ["n_train_000000.bin", "n_train_000001.bin", "n_train_000002.bin"]
    assert [len(read_shard(p)) for p in paths] == [4, 4, 2]
    assert load_tokens(find_shards(tmp_path, "train")).tolist() == list(range(10))
    write_split(tokens[:3], tmp_path, "n", "train", max_tokens_per_shard=4)  # a smaller rerun
    assert [p.name for p in find_shards(tmp_path, "train")] == ["n_train_000000.bin"]


def test_encode_documents_bos_no_eos_and_document_starts(small_tokenizer):
    docs = [Document("a", "Hello world."), Document("b", "x = 1")]
    tokens = encode_documents(docs, small_tokenizer)
    assert tokens.dtype == np.uint16
    bos, eos = small_tokenizer.bos_id, small_tokenizer.eos_id
    expected = [bos] + small_tokenizer.encode("Hello world.") + [bos] + small_tokenizer.encode("x = 1")
    assert tokens.tolist() == expected
    assert eos not in tokens.tolist()
    starts = document_starts(tokens, bos)
    assert starts.tolist() == [0, 1 + len(small_tokenizer.encode("Hello world."))]
