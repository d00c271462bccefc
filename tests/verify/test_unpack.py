"""`golfpack unpack`: an artifact back to a checkpoint that any safetensors tool loads and that verifies to the same
val_bpb as the artifact, routing rule included."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from cli import main
from core.checkpoint import save_checkpoint
from core.config import ModelConfig
from core.corpus import Document
from core.model import RecurrentLM
from core.shards import encode_documents, write_split
from packer.reader import read_artifact
from quant.unpack import artifact_tensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(args, code=0):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, (res.stdout, res.stderr)
    return res


@pytest.fixture(scope="module")
def packed(tmp_path_factory, small_tokenizer):
    """A small recurrent core with a calibrated routing rule, packed; shards beside it."""
    d = tmp_path_factory.mktemp("unpack")
    docs = [Document(f"d{i}", f"def f{i}(x):\n    return x * {i} + {i % 7}\n" * 6) for i in range(90)]
    write_split(encode_documents(docs[:80], small_tokenizer), d, "t", "train")
    write_split(encode_documents(docs[80:], small_tokenizer), d, "t", "val")
    cfg = ModelConfig(vocab_size=small_tokenizer.vocab_size, d_model=32, n_heads=2, n_kv_heads=1, n_passes=2,
                      seq_len=32)
    torch.manual_seed(0)
    save_checkpoint(d / "m", RecurrentLM(cfg), cfg, {"tokenizer_sha256": small_tokenizer.sha256,
                                                    "train": {"holdout_tokens": 2049}})
    run(["pack", d / "m", "-o", d / "m.gpk", "--codecs", "zstd", "--route-signal", "update_size"])
    return d


def test_unpack_round_trip_verifies_to_the_same_bpb(packed, small_tokenizer):
    d = packed
    rep = json.loads(run(["unpack", d / "m.gpk", "-o", d / "back", "--json"]).stdout)
    art = read_artifact(d / "m.gpk")
    assert rep["routing"]["policy"] == "adaptive" and rep["artifact_sha256"] == art.file_sha256
    plain = load_file(str(d / "back.safetensors"))                          # any safetensors tool reads it
    want = artifact_tensors(art)
    assert set(plain) == set(want) and all(np.array_equal(plain[k].numpy(), want[k]) for k in want)
    common = ["--data", d, "--tokenizer", small_tokenizer.path, "--json"]
    a = json.loads(run(["verify", d / "m.gpk", *common]).stdout)
    c = json.loads(run(["verify", d / "back", *common]).stdout)
    assert a["route_signal"] == c["route_signal"] == "update_size"
    assert a["val_bpb"] == c["val_bpb"] and a["route_selected"] == c["route_selected"]


def test_unpack_never_writes_over_its_artifact_or_into_a_missing_folder(packed, tmp_path):
    d = packed
    before = (d / "m.gpk").read_bytes()
    res = run(["unpack", d / "m.gpk", "-o", tmp_path / "no" / "x"], code=9)
    assert "does not exist" in res.stderr and not (tmp_path / "no").exists()
    (d / "m.safetensors").rename(d / "keep.safetensors")
    (d / "m.json").rename(d / "keep.json")
    try:
        (d / "m.safetensors").symlink_to(d / "m.gpk")                       # an output spelled as the input
        res = run(["unpack", d / "m.gpk", "-o", d / "m"], code=9)
        assert "same file as input" in res.stderr
    finally:
        (d / "m.safetensors").unlink()
        (d / "keep.safetensors").rename(d / "m.safetensors")
        (d / "keep.json").rename(d / "m.json")
    assert (d / "m.gpk").read_bytes() == before
