"""The pack job: every family through one source object, the hold-out decided in one place, cheap checks first."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from common.errors import OutputError, UsageError
from core.checkpoint import save_checkpoint
from core.ingest import file_sha256
from core.shards import write_shard
from core.sources import load_source
from quant.calibrate import CalibConfig, calibration_sets, unseen_tokens
from quant.options import PackOptions
from quant.pack_job import PackJob, PackRequest, pack_job

FAST = PackOptions(extra_codecs=())


@pytest.fixture()
def held(tiny, tmp_path):
    """A checkpoint that held out the last 3,001 of its 9,000 training tokens."""
    toks = (np.arange(9000) * 7 % tiny.cfg.vocab_size).astype(np.uint16)
    write_shard(tmp_path / "h_train_000000.bin", toks)
    save_checkpoint(tmp_path / "held", tiny.model(), tiny.cfg, {"tokenizer_sha256": None,
                                                                 "train": {"holdout_tokens": 3001}})
    return tmp_path


def test_unseen_tokens_are_the_hold_out_and_defaults_are_capped_to_it(tiny, held):
    unseen = unseen_tokens({"train": {"holdout_tokens": 3001}}, held, tiny.cfg.vocab_size)
    assert len(unseen.tokens) == 3001 and unseen.holdout == 3001
    assert np.array_equal(unseen.tokens, (np.arange(5999, 9000) * 7 % tiny.cfg.vocab_size))
    assert unseen.take(None, 8192, "--calib-tokens") == 3000          # the default, capped: 3,000 targets
    assert unseen.take(2000, 8192, "--calib-tokens") == 2000
    with pytest.raises(UsageError, match=r"--calib-tokens 5,000 needs 5,001 .* held out only 3,001"):
        unseen.take(5000, 8192, "--calib-tokens")
    win, joint = calibration_sets(unseen, CalibConfig(), tiny.cfg.seq_len, progress=False)
    assert win.max() < tiny.cfg.vocab_size and joint is None     # both capped to 3,000: one set serves both
    foreign = unseen_tokens({}, held, tiny.cfg.vocab_size)          # no recorded hold-out: every token, as before
    assert len(foreign.tokens) == 9000 and foreign.take(100_000, 8192, "--calib-tokens") == 100_000


def test_route_calib_tokens_beyond_the_hold_out_is_refused_naming_both_and_writes_nothing(tiny, held, tmp_path):
    save_checkpoint(held / "big", tiny.model(), tiny.cfg, {"tokenizer_sha256": None,
                                                           "train": {"holdout_tokens": 65_537}})
    out = tmp_path / "never.gpk"
    res = CliRunner().invoke(main, ["pack", str(held / "big"), "-o", str(out), "--route-calib-tokens", "100000"])
    assert res.exit_code == 2, res.output
    line = res.stderr.strip()
    assert line.count("\n") == 0 and "100,000" in line and "65,537" in line and "--route-calib-tokens" in line
    assert not out.exists() and not list(tmp_path.glob(".never.gpk.tmp-*"))


def test_every_calibration_draws_from_the_hold_out(tiny, held):
    job = PackJob(load_source(held / "held"), PackRequest(options=FAST, progress=False))
    cal = job.packer.report["calibration"]
    assert cal["source"] == {"data": str(held), "tokens": 3001, "holdout_tokens": 3001}
    assert cal["tokens"] <= 3000 and cal["route_tokens"] == 3000       # defaults capped to the hold-out
    assert job.packer.route.opts.calib_tokens == 3000 and len(job.packer.route.tokens) == 3001


def test_families_go_through_one_source_and_differ_by_hooks(tiny, held):
    src = load_source(held / "held")
    body = src.manifest_body(None)
    assert body["routing"] == {"policy": "uniform", "passes": tiny.cfg.n_passes}
    assert body["source"] == {"format": "golfpack", "sha256": file_sha256(held / "held.safetensors")}
    assert src.family_hooks.can_route and src.paths[0] == held / "held"


def test_cheap_checks_come_before_any_work(tiny, held, tmp_path, monkeypatch):
    import quant.pack_job as J

    monkeypatch.setattr(J, "PackJob", lambda *a, **k: pytest.fail("packed before checking the output"))
    src = load_source(held / "held")
    for out, match in ((tmp_path / "no" / "dir" / "x.gpk", "does not exist"), (tmp_path, "is a folder"),
                       (held / "held.safetensors", "same file as input")):
        with pytest.raises(OutputError, match=match):
            pack_job(src, PackRequest(out=out, options=FAST, progress=False))


def test_plan_out_and_report_say_which_tokens(tiny, held, tmp_path):
    res = CliRunner().invoke(main, ["pack", str(held / "held"), "-o", str(tmp_path / "h.gpk"), "--codecs", "zstd",
                                    "--route-signal", "none", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["fits"] and rep["planning"]["calibration"]["source"]["holdout_tokens"] == 3001
