"""Parameter Golf checkpoints end to end: ingest, pack, verify (as is and sliding-window), export a submission."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from cli import main
from core.pgolf_model import PGolfConfig, PGolfGPT
from core.scoring import score_stream, sliding_windows
from core.shards import encode_documents, load_tokens, write_split
from packer.reader import read_artifact
from quant.unpack import build_model

SEQ = ["--seq-len", "64"]
FP32 = ["--embed-format", "fp32", "--matrix-format", "fp32", "--control-format", "fp32"]


def run(args, code=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == code, (res.stdout, res.stderr)
    return res


def run_json(args) -> dict:
    return json.loads(run([*args, "--json"]).stdout)


def _tiny_cfg(vocab: int) -> PGolfConfig:
    return PGolfConfig(vocab_size=vocab, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2,
                       mlp_hidden=64, mlp_power=3, softcap=20.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, small_tokenizer, default_docs):
    """A random relu^3 PGolfGPT saved as a torch.save state_dict, plus a 3000-token val shard."""
    d = tmp_path_factory.mktemp("pgolf")
    torch.manual_seed(0)
    model = PGolfGPT(_tiny_cfg(small_tokenizer.vocab_size))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "resid_mix" not in name and "skip" not in name:
                p.normal_(0, 0.15)
    torch.save(model.state_dict(), d / "final_model.pt")
    tokens = encode_documents(default_docs[60:63], small_tokenizer)[:3000]
    write_split(tokens, d / "shards", "fineweb", "val")
    return {"dir": d, "pt": d / "final_model.pt", "shards": d / "shards", "tok": small_tokenizer.path,
            "model": model.eval()}


def test_pack_records_the_architecture_and_stores_the_tied_head_once(tiny):
    art_path = tiny["dir"] / "default.gpk"
    run(["pack", tiny["pt"], "-o", art_path, "--tokenizer", tiny["tok"], "--mlp-power", 3, "--softcap", 20])
    art = read_artifact(art_path)
    m = art.manifest
    assert m["model"] == {"family": "pgolf", "config": _tiny_cfg(tiny["model"].cfg.vocab_size).to_dict()}
    assert m["routing"] == {"policy": "uniform"}
    assert m["source"]["format"] == "pt" and len(m["source"]["sha256"]) == 64
    stored = {t["name"]: t for t in m["tensors"]}
    formats = {n: stored[t.get("alias_of", n)]["format"] for n, t in stored.items()}   # exact duplicates alias
    assert set(formats) == set(tiny["model"].state_dict())          # no lm_head: tok_emb.weight is the head
    assert "alias_of" not in stored["tok_emb.weight"]
    assert formats["tok_emb.weight"] == "int8_row" and formats["blocks.0.mlp.fc.weight"] == "int6_row"
    for name in ("skip_weights", "blocks.1.resid_mix", "blocks.1.attn.q_gain", "blocks.2.attn_scale"):
        assert formats[name] == "fp16", name                         # control tensors stay float
    model = build_model(art)
    assert isinstance(model, PGolfGPT) and model.cfg.mlp_power == 3 and model.cfg.softcap == 20.0
    # a foreign checkpoint carries no tokenizer: packing one without --tokenizer is refused
    res = run(["pack", tiny["pt"], "-o", tiny["dir"] / "x.gpk", "--mlp-power", 3], code=2)
    assert "--tokenizer" in res.stderr


def test_pack_verify_round_trip_exact_at_fp32_and_close_at_default(tiny):
    exact, default = tiny["dir"] / "fp32.gpk", tiny["dir"] / "default_rt.gpk"
    common = ["--tokenizer", tiny["tok"], "--mlp-power", 3, "--softcap", 20]
    run(["pack", tiny["pt"], "-o", exact, *FP32, *common])
    run(["pack", tiny["pt"], "-o", default, *common])
    rep = run_json(["verify", exact, "--data", tiny["shards"], "--tokenizer", tiny["tok"], *SEQ,
                    "--reference", tiny["pt"]])
    assert rep["family"] == "pgolf" and rep["seq_len"] == 64 and rep["tokens"] == 2999
    assert rep["references"][0]["kind"] == "foreign"                 # took --mlp-power/--softcap from the artifact
    assert rep["val_bpb"] == rep["reference"]["val_bpb"]             # fp32 storage: bit-exact weights
    rep = run_json(["verify", default, "--data", tiny["shards"], "--tokenizer", tiny["tok"], *SEQ,
                    "--reference", tiny["pt"]])
    assert 0 < abs(rep["quantization_gap_bpb"]) < 0.05
    assert default.stat().st_size < exact.stat().st_size / 2
    # the artifact records its architecture: a conflicting option is refused, not silently used
    res = run(["verify", default, "--data", tiny["shards"], "--tokenizer", tiny["tok"], "--mlp-power", 2], code=2)
    assert "mlp_power=3" in res.stderr


def test_ingested_checkpoint_is_taken_by_verify_and_pack(tiny):
    stem = tiny["dir"] / "ingested"
    rep = run_json(["ingest", tiny["pt"], "-o", stem, "--tokenizer", tiny["tok"], "--mlp-power", 3,
                    "--softcap", 20])
    assert rep["family"] == "pgolf" and rep["model"]["mlp_power"] == 3
    doc = json.loads(stem.with_suffix(".json").read_text())
    assert doc["model"]["family"] == "pgolf" and doc["meta"]["tokenizer_sha256"] == rep["tokenizer_sha256"]
    as_is = run_json(["verify", stem, "--data", tiny["shards"], "--tokenizer", tiny["tok"], *SEQ])
    foreign = run_json(["verify", tiny["pt"], "--data", tiny["shards"], "--tokenizer", tiny["tok"], *SEQ,
                        "--mlp-power", 3, "--softcap", 20])
    assert as_is["kind"] == "golfpack-checkpoint" and foreign["kind"] == "foreign"
    assert as_is["val_bpb"] == foreign["val_bpb"]
    wrong_power = run_json(["verify", tiny["pt"], "--data", tiny["shards"], "--tokenizer", tiny["tok"], *SEQ])
    assert wrong_power["val_bpb"] != foreign["val_bpb"]            # relu^2 by default: another model
    run(["pack", stem, "-o", tiny["dir"] / "from_ingested.gpk"])      # tokenizer recorded: no --tokenizer needed
    assert read_artifact(tiny["dir"] / "from_ingested.gpk").manifest["model"]["config"]["softcap"] == 20.0


def test_sliding_windows_tile_the_targets():
    for n, seq, stride in [(2, 4, 1), (10, 4, 4), (11, 4, 3), (100, 16, 5), (17, 16, 16), (5, 16, 7)]:
        wins = sliding_windows(n, seq, stride)
        scored = np.zeros(n - 1, dtype=int)
        for start, length, first in wins:
            assert 1 <= length <= seq and 0 <= first < length
            scored[start + first:start + length] += 1
            if start > 0:
                assert first == seq - stride or start + length == n - 1      # only the tail after the first
        assert (scored == 1).all(), (n, seq, stride)


def test_sliding_window_scores_every_token_once_with_its_window_context(tiny):
    model = tiny["model"]
    tokens = load_tokens([tiny["shards"] / "fineweb_val_000000.bin"])[:700].astype(np.int64)
    def fn(x):
        return model(x)

    plain = score_stream(fn, tokens, 64, batch_size=8)
    same = score_stream(fn, tokens, 64, batch_size=8, stride=64)
    assert np.array_equal(plain, same)                              # stride == seq_len: the same windows
    slid = score_stream(fn, tokens, 64, batch_size=8, stride=16)
    assert slid.shape == plain.shape and np.array_equal(slid[:64], plain[:64])
    t = torch.from_numpy(tokens)
    for target in (64, 100, 333, 698):                              # target index j predicts tokens[j + 1]
        start = max(0, (target - 64) // 16 + 1) * 16                # the window that scores it
        with torch.no_grad():
            logits = model(t[None, start:target + 1])[0, -1]
        want = F.cross_entropy(logits[None], t[target + 1][None]).item()
        assert slid[target] == pytest.approx(want, abs=1e-5), target
        assert target - start + 1 >= 64 - 16 + 1                    # context of at least seq_len - stride + 1
    rep = run_json(["verify", tiny["pt"], "--data", tiny["shards"], "--tokenizer", tiny["tok"], *SEQ,
                    "--mlp-power", 3, "--softcap", 20, "--sliding-window", 64])
    rep_plain = run_json(["verify", tiny["pt"], "--data", tiny["shards"], "--tokenizer", tiny["tok"], *SEQ,
                          "--mlp-power", 3, "--softcap", 20])
    assert rep["val_bpb"] == rep_plain["val_bpb"] and rep["sliding_window_stride"] == 64
    run(["verify", tiny["pt"], "--data", tiny["shards"], "--tokenizer", tiny["tok"], *SEQ,
         "--sliding-window", 65], code=2)                           # stride > seq_len is refused


def test_exported_submission_runs_alone_and_prints_the_verify_bpb(tiny, tmp_path):
    art = tiny["dir"] / "submit.gpk"
    run(["pack", tiny["pt"], "-o", art, "--tokenizer", tiny["tok"], "--mlp-power", 3, "--softcap", 20])
    out = tmp_path / "submission"
    rep = run_json(["export-submission", art, "-o", out])
    script = out / "submission.py"
    assert rep["code_bytes"] == script.stat().st_size and (out / "submit.gpk").read_bytes() == art.read_bytes()
    assert "core/pgolf_model.py" in rep["modules"] and "verify/submission_runtime.py" in rep["modules"]
    assert {"torch", "numpy", "sentencepiece", "zstandard"} <= set(rep["requires"])
    audit = run_json(["audit", out / "submit.gpk", "--code", script])
    assert audit["code_bytes"] == script.stat().st_size
    assert audit["total_bytes"] == script.stat().st_size + art.stat().st_size
    text = script.read_text()
    assert len(text.splitlines()) == 2 and "b85decode" in text       # lzma + base85 self-extracting
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(script), "--data", str(tiny["shards"]), "--tokenizer",
                           str(tiny["tok"]), *SEQ], check=False, cwd=work, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, js = proc.stdout.splitlines()[:2]
    got = json.loads(js)
    ver = run_json(["verify", art, "--data", tiny["shards"], "--tokenizer", tiny["tok"], *SEQ])
    assert got["val_bpb"] == ver["val_bpb"] and got["tokens"] == ver["tokens"]
    assert first == f"val_loss:{ver['val_loss']:.8f} val_bpb:{ver['val_bpb']:.8f}"


def test_submission_bundle_is_closed(tmp_path):
    """The script serves only bundled modules: importing one of our modules it lacks fails loudly."""
    from verify.submission import build_script

    script = tmp_path / "s.py"
    script.write_text(build_script({"core/__init__.py": "", "verify/__init__.py": "",
                                    "verify/submission_runtime.py": "from core import ingest\n"}, "a.gpk"))
    proc = subprocess.run([sys.executable, str(script)], check=False, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "core.ingest is not bundled" in proc.stderr


def test_data_command_writes_parameter_golf_shards(tmp_path, small_tokenizer):
    raw = tmp_path / "wiki.raw"
    raw.write_text(" = Title = \n\n Some prose here , with WikiText spacing . \n", encoding="utf-8")
    jl = tmp_path / "docs.jsonl"
    jl.write_text('{"text": "first doc"}\n{"text": "second doc"}\n', encoding="utf-8")
    rep = run_json(["data", raw, jl, "--tokenizer", small_tokenizer.path, "--out", tmp_path / "out"])
    [shard] = rep["shards"]
    assert shard.endswith("text_val_000000.bin")
    tokens = load_tokens([shard])
    assert int((tokens == small_tokenizer.bos_id).sum()) == 3 and tokens[0] == small_tokenizer.bos_id
    assert rep["tokens"] == len(tokens)
    run(["data", "--tokenizer", small_tokenizer.path, "--out", tmp_path / "out"], code=2)


@pytest.mark.parametrize("name,power", [("taleef7", 2), ("nolanvild", 3)])
def test_real_checkpoints_pack_smaller_than_their_ptz_at_matching_bpb(shared_data, tmp_path, name, power):
    src, tok = shared_data / "pgolf" / name, shared_data / "tokenizers" / "fineweb_1024_bpe.model"
    text = tmp_path / "wiki.txt"                                        # ~6k tokens of WikiText: seconds
    text.write_text((shared_data / "text" / "wikitext2_test.raw").read_text(encoding="utf-8")[:16000])
    run(["data", text, "--tokenizer", tok, "--out", tmp_path / "shards"])
    art = tmp_path / f"{name}.gpk"
    packed = run_json(["pack", src / "final_model.pt", "-o", art, "--tokenizer", tok, "--mlp-power", power])
    assert packed["file_bytes"] < (src / "final_model.int8.ptz").stat().st_size
    assert read_artifact(art).manifest["model"]["config"]["mlp_power"] == power
    rep = run_json(["verify", art, "--data", tmp_path / "shards", "--tokenizer", tok, "--seq-len", 256,
                    "--reference", src / "final_model.pt", "--reference", src / "final_model.int8.ptz"])
    pt, ptz = rep["references"]
    assert pt["format"] == "pt" and ptz["format"] == "ptz"
    assert abs(ptz["val_bpb"] - pt["val_bpb"]) < 0.005                # the .ptz's int8/fp16 gap
    assert abs(rep["val_bpb"] - pt["val_bpb"]) < 0.01
    if name == "nolanvild":
        assert pt["val_bpb"] < 3.0                                      # trained: far below uniform (~4.2 bpb)
