"""The routing experiment on a tiny two-exit model: rows, columns, legality flags, the random chord; bootstrap."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import main
from core.checkpoint import save_checkpoint
from core.config import ModelConfig
from core.routing import LEGAL_SIGNALS, ORACLE_SIGNALS
from core.shards import encode_documents, write_split
from core.train import TrainConfig, train
from quant.assemble import pack_tensors
from quant.options import PackOptions
from verify.bootstrap import PairedBootstrap, document_ids
from verify.experiment import ExperimentOptions, run_experiment

COLUMNS = ("policy", "signal", "fraction", "legal", "val_bpb", "delta_vs_uniform_k", "delta_vs_uniform_k1",
           "flops_per_token", "tokens_per_second", "capture_efficiency", "overhead_ratio",
           "route_fraction_realized", "cap_bound_count")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, small_tokenizer, default_docs):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("exp")
    docs = default_docs[:90]
    train_toks = encode_documents(docs[:75], small_tokenizer)
    val_toks = encode_documents(docs[75:], small_tokenizer)[:12_000]
    write_split(train_toks, folder, "t", "train")
    write_split(val_toks, folder, "t", "val")
    cfg = ModelConfig(vocab_size=small_tokenizer.vocab_size, d_model=32, n_heads=4, n_kv_heads=2, n_passes=2,
                      seq_len=32)
    res = train(cfg, TrainConfig(steps=60, batch_size=16, two_exit=True, eval_every=10_000, warmup_steps=5, holdout_tokens=0,
                                 device="cpu"), train_toks, val_toks, small_tokenizer.byte_tables(), progress=False)
    tensors = {k: v.detach().numpy() for k, v in res.model.state_dict().items()}
    body = {"model": {"family": "recurrent", "config": cfg.to_dict()},
            "routing": {"policy": "uniform", "passes": 2},
            "tokenizer": {"sha256": small_tokenizer.sha256, "vocab_size": cfg.vocab_size}}
    art = folder / "m.gpk"
    art.write_bytes(pack_tensors(tensors, body, PackOptions()).data)
    save_checkpoint(folder / "m", res.model, cfg, {"tokenizer_sha256": small_tokenizer.sha256})
    opts = ExperimentOptions(fractions=(0.25, 0.5), calib_tokens=8192, n_boot=300, time_tokens=2 * 32 * 8,
                             time_repeats=1, warmup=0, batch_size=8)
    out = run_experiment(art, [folder], small_tokenizer.path, opts, progress=False)
    torch.set_num_threads(n)
    out["meta"]["folder"] = str(folder)
    return out


def test_every_policy_has_a_row_with_every_column(experiment):
    rows = experiment["rows"]
    json.dumps(experiment)                                           # plain JSON, no NaN objects needed
    names = [r["policy"] for r in rows]
    assert names[:2] == ["uniform-K", "uniform-K+1"]
    for s in LEGAL_SIGNALS + ORACLE_SIGNALS:
        for f in (0.25, 0.5):
            assert f"{s}@{f:g}" in names
    for r in rows:
        for c in COLUMNS:
            assert c in r, (r["policy"], c)
        for key in ("delta_vs_uniform_k", "delta_vs_uniform_k1"):
            d = r[key]
            assert d["lo"] <= d["delta"] + 1e-12 and d["delta"] <= d["hi"] + 1e-12
        assert r["tokens_per_second"] > 0
        assert r["timed_max_abs_nll_diff"] < 1e-4                    # real sparse runs = the mixed losses
        assert r["legal"] == (r["signal"] not in ORACLE_SIGNALS)
        if r["signal"] is not None:
            assert abs(r["timed_fraction"] - r["route_fraction_realized"]) < 0.1


def test_uniform_rows_and_oracles(experiment):
    rows = {r["policy"]: r for r in experiment["rows"]}
    k, k1 = rows["uniform-K"], rows["uniform-K+1"]
    assert k["delta_vs_uniform_k"]["delta"] == 0 and k1["delta_vs_uniform_k1"]["delta"] == 0
    assert k["flops_per_token"] < rows["random@0.25"]["flops_per_token"] < k1["flops_per_token"]
    for f in ("0.25", "0.5"):
        oracle = rows[f"oracle_gain@{f}"]
        assert not oracle["legal"] and oracle["capture_efficiency"] > 0.5
        legal = [r for r in experiment["rows"] if r["legal"] and r["fraction"] == float(f)]
        assert oracle["val_bpb"] <= min(r["val_bpb"] for r in legal) + 1e-9
        assert rows[f"random@{f}"]["cap_bound_count"] >= 0


@pytest.mark.parametrize("f", [0.25, 0.5])
def test_random_routing_lies_on_the_chord(experiment, f):
    rows = {r["policy"]: r for r in experiment["rows"]}
    rnd, k, k1 = rows[f"random@{f:g}"], rows["uniform-K"], rows["uniform-K+1"]
    fr = rnd["route_fraction_realized"]
    assert abs(fr - f) <= 0.05
    chord = (1 - fr) * k["val_bpb"] + fr * k1["val_bpb"]
    d = rnd["delta_vs_uniform_k"]
    half = (d["hi"] - d["lo"]) / 2
    assert abs(rnd["val_bpb"] - chord) <= max(half, 0.02 * abs(k1["val_bpb"] - k["val_bpb"]) + 1e-4)


def test_legal_rows_stay_near_their_target_fraction(experiment):
    for r in experiment["rows"]:
        if r["legal"] and r["signal"] is not None:
            assert r["route_fraction_realized"] <= r["fraction"] + 0.05 + 1e-9, r["policy"]     # the cap


def test_document_ids_and_paired_bootstrap():
    toks = np.array([1, 5, 6, 1, 7, 1, 8, 9, 9])
    ids = document_ids(toks, 1)
    assert ids.tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
    nats = np.linspace(1, 2, 8)
    boot = PairedBootstrap(ids, np.ones(8), n_boot=200, seed=0)
    same = boot.delta_bpb(nats, nats)
    assert same == {"delta": 0.0, "lo": 0.0, "hi": 0.0}
    d = boot.delta_bpb(nats, nats + 0.5)
    assert d["delta"] == pytest.approx(-0.5 / math.log(2)) and d["lo"] <= d["delta"] <= d["hi"]


def test_cli_experiment_json_and_plot(experiment, small_tokenizer, tmp_path):
    folder = Path(experiment["meta"]["folder"])
    png = tmp_path / "exp.png"
    args = ["experiment", str(folder / "m.gpk"), "--data", str(folder), "--tokenizer", str(small_tokenizer.path),
            "--fractions", "0.25", "--signals", "random,update_size,oracle_gain", "--calib-tokens", "4096",
            "--time-tokens", "256", "--time-repeats", "1", "--bootstrap", "100", "--json", "--plot", str(png)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert [r["policy"] for r in rep["rows"]] == ["uniform-K", "uniform-K+1", "random@0.25", "update_size@0.25",
                                                  "oracle_gain@0.25"]
    assert rep["rows"][-1]["legal"] is False
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_pack_embeds_a_calibrated_rule_and_audit_names_the_winner(experiment, tmp_path):
    from packer.reader import read_artifact

    folder = Path(experiment["meta"]["folder"])
    out = tmp_path / "r.gpk"
    res = CliRunner().invoke(main, ["pack", str(folder / "m"), "-o", str(out), "--calib-data", str(folder),
                                    "--route-calib-tokens", "4096", "--route-fraction", "0.2", "--json"])
    assert res.exit_code == 0, res.output
    routing = read_artifact(out).manifest["routing"]
    assert routing["policy"] == "adaptive" and routing["target_fraction"] == 0.2
    assert routing["signal"] in LEGAL_SIGNALS and routing["cap_fraction"] == 0.25
    assert routing["selection"][0]["signal"] == routing["signal"]
    audit = CliRunner().invoke(main, ["audit", str(out)])
    assert audit.exit_code == 0 and f"signal {routing['signal']}" in audit.output and "runner-up" in audit.output
    uniform = CliRunner().invoke(main, ["pack", str(folder / "m"), "-o", str(tmp_path / "u.gpk"),
                                        "--route-signal", "none", "--json"])
    assert uniform.exit_code == 0, uniform.output
    assert read_artifact(tmp_path / "u.gpk").manifest["routing"]["policy"] == "uniform"
    bad = CliRunner().invoke(main, ["pack", str(folder / "m"), "-o", str(tmp_path / "o.gpk"),
                                    "--route-signal", "oracle_gain"])
    assert bad.exit_code != 0 and "oracle" in bad.output


def test_two_exit_loss_is_the_mean_of_both_exits():
    import torch.nn.functional as F

    from core.model import RecurrentLM
    from core.train import compute_loss

    cfg = ModelConfig(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, n_passes=2, seq_len=16)
    torch.manual_seed(0)
    m = RecurrentLM(cfg)
    x, y = torch.randint(0, 64, (3, 16)), torch.randint(0, 64, (3, 16))
    tc = TrainConfig(steps=1, two_exit=True)
    want = 0.5 * (F.cross_entropy(m(x).reshape(-1, 64), y.reshape(-1))
                  + F.cross_entropy(m(x, 3).reshape(-1, 64), y.reshape(-1)))
    assert torch.allclose(compute_loss(m, x, y, tc), want, atol=1e-6)
    assert not torch.allclose(compute_loss(m, x, y, TrainConfig(steps=1)), want)
