"""Tied and duplicate tensors are stored once: manifest aliases, 0 bytes in the audit, same values back."""

import numpy as np
import torch

from core.config import ModelConfig
from core.model import RecurrentLM
from packer.audit import audit_artifact
from packer.code_bytes import count_code
from packer.reader import read_artifact
from quant.assemble import pack_tensors
from quant.options import PackOptions
from quant.tying import find_duplicates
from quant.unpack import artifact_tensors, build_model

CFG = ModelConfig(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, n_passes=3, n_blocks=1, seq_len=16)


def trained_like_tensors():
    torch.manual_seed(0)
    m = RecurrentLM(CFG)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)        # distinct norms, as after training
    return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}


def body():
    return {"model": {"family": "recurrent", "config": CFG.to_dict()},
            "routing": {"policy": "uniform", "passes": 3}, "tokenizer": {"sha256": None, "vocab_size": 64}}


def test_find_duplicates_exact_only():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = a.copy()
    c = a.copy()
    c[0, 0] = np.nextafter(np.float32(0), np.float32(1))   # differs in one ulp: not a duplicate
    assert find_duplicates({"x": a, "y": b, "z": c, "w": a.reshape(3, 2)}) == {"y": "x"}


def test_tied_head_and_repeated_block_stored_once_with_zero_bytes():
    t = trained_like_tensors()
    dup = dict(t)
    dup["lm_head.weight"] = t["tok_emb.weight"].copy()                 # a checkpoint that carries the tie twice
    for k in [k for k in t if k.startswith("blocks.0.")]:
        dup[k.replace("blocks.0.", "blocks.1.")] = t[k].copy()         # a shared block exported twice
    res = pack_tensors(dup, body(), PackOptions())
    assert res.aliases["lm_head.weight"] == "tok_emb.weight"          # stored as the embedding
    assert all(res.aliases[k] == k.replace("blocks.1.", "blocks.0.") for k in dup if k.startswith("blocks.1."))
    plain = pack_tensors(t, body(), PackOptions())
    assert res.file_bytes - plain.file_bytes < 2000          # only manifest lines, no second payload
    art = read_artifact(res.data)
    rep = audit_artifact(art, count_code(), 10**9)
    rows = {r["name"]: r for r in rep["tensors"]}
    for alias, target in res.aliases.items():
        assert rows[alias]["bytes"] == 0 and rows[alias]["format"] == f"alias of {target}"
    assert sum(s.stored_bytes for s in art.sections) == sum(r["bytes"] for r in rep["tensors"])
    got = artifact_tensors(art)
    for alias, target in res.aliases.items():
        assert np.array_equal(got[alias], got[target])


def test_shared_block_is_one_set_of_tensors_for_all_passes():
    t = trained_like_tensors()
    assert not any(k.startswith("blocks.1.") for k in t)              # K = 3 passes, one block
    res = pack_tensors(t, body(), PackOptions())
    assert res.aliases == {}
    model = build_model(read_artifact(res.data))
    x = torch.randint(0, 64, (2, 16))
    assert model(x).shape == (2, 16, 64)
