"""The audit (packer/audit.py): every byte accounted for, each tensor's code entropy and coder model bytes, the one
budget rule (fits, "over budget by N B", exit 6), and the PNG chart."""

import json

import numpy as np
from click.testing import CliRunner

from cli import main
from packer.audit import audit_artifact
from packer.code_bytes import CodeCount
from packer.entropy.codec import describe
from packer.entropy.models import order0_entropy_bits
from packer.reader import read_artifact
from packer.writer import SectionSpec, build_artifact

RNG = np.random.default_rng(0)
CODES = np.clip(np.rint(RNG.laplace(0, 6, (64, 96))), -31, 31).astype(np.int8)
SCALES = (RNG.random(64) + 0.5).astype(np.float16)
EMB = RNG.standard_normal((16, 8)).astype(np.float16)
CODE = CodeCount(("x.py",), 1000, 1000, "files as shipped")


def artifact() -> bytes:
    body = {"model": {"family": "recurrent", "config": {}}, "routing": {"policy": "uniform", "passes": 2},
            "tokenizer": {"sha256": None, "vocab_size": 16}, "tool": {"name": "golfpack", "version": "t"},
            "tensors": [{"name": "tok_emb.weight", "shape": [16, 8], "format": "fp16", "sections": {"data": "0/data"}},
                        {"name": "blocks.0.mlp.fc.weight", "shape": [64, 96], "format": "int6_row",
                         "sections": {"codes": "1/codes", "scales": "1/scales"}}]}
    params = {"dtype": "int8", "shape": [64, 96], "bits": 6}
    return build_artifact(body, [SectionSpec("0/data", EMB.tobytes(), "zstd", {"dtype": "float16", "shape": [16, 8]}),
                                 SectionSpec("1/codes", CODES.tobytes(), "ans", params),
                                 SectionSpec("1/scales", SCALES.tobytes(), "raw", {"dtype": "float16", "shape": [64]})])


def test_every_byte_and_each_tensors_entropy_and_model_bytes():
    data = artifact()
    art = read_artifact(data)
    rep = audit_artifact(art, CODE, 10**6)
    assert sum(s["bytes"] for s in rep["sections"]) == rep["file_bytes"] == len(data)
    assert sum(g["bytes"] for g in rep["groups"]) == len(data)
    t = {x["name"]: x for x in rep["tensors"]}
    mlp = t["blocks.0.mlp.fc.weight"]
    assert np.isclose(mlp["entropy_bits_per_param"], order0_entropy_bits(CODES) / CODES.size)
    assert 0 < mlp["entropy_bits_per_param"] < 6
    sec = art.section("1/codes")
    assert mlp["model_bytes"] == describe(art.stored("1/codes"), sec.params, sec.raw_bytes)["model_bytes"] > 0
    assert t["tok_emb.weight"]["entropy_bits_per_param"] is None and t["tok_emb.weight"]["model_bytes"] is None
    assert rep["fits"] and rep["headroom_bytes"] == 10**6 - len(data) - 1000
    assert rep["sha256"] != rep["trailer_sha256"]


def test_over_budget_is_said_and_exits_6_after_the_report(tmp_path):
    (tmp_path / "a.gpk").write_bytes(artifact())
    res = CliRunner().invoke(main, ["audit", str(tmp_path / "a.gpk"), "--budget-bytes", "1000", "--json"])
    assert res.exit_code == 6
    rep = json.loads(res.stdout)
    assert rep["fits"] is False and rep["headroom_bytes"] < 0
    assert res.stderr.strip() == f"golfpack: error: over budget by {-rep['headroom_bytes']:,} B " \
                                 f"({rep['total_bytes']:,} B counted, budget 1,000 B)"
    text = CliRunner().invoke(main, ["audit", str(tmp_path / "a.gpk"), "--budget-bytes", "1000"])
    assert text.exit_code == 6 and f"over budget by {-rep['headroom_bytes']:,} B" in text.stdout
    ok = CliRunner().invoke(main, ["audit", str(tmp_path / "a.gpk"), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["fits"] is True


def test_plot_writes_a_png(tmp_path):
    (tmp_path / "a.gpk").write_bytes(artifact())
    png = tmp_path / "audit.png"
    res = CliRunner().invoke(main, ["audit", str(tmp_path / "a.gpk"), "--plot", str(png), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000
