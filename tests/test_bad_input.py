"""Bad input, tried as a new user would: each mistake gets its exit code and one line on stderr (no traceback),
leaves every input byte-identical, writes nothing, and fails before any heavy work; numbers that would mislead
come with a warning. README "Exit codes" lists the codes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from cli import main
from common import errors as E
from core.checkpoint import save_checkpoint
from core.config import ModelConfig
from core.model import RecurrentLM
from core.shards import encode_documents, write_split

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def digest(paths) -> dict:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths if Path(p).is_file()}


def fails(args, code: int, *, inputs=(), never=()) -> str:
    """Run the CLI; assert the exit code, one line on stderr without a traceback, inputs unchanged, and nothing
    at `never` (nor a temporary beside it). Returns the line."""
    before = digest(inputs)
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    errs = [ln for ln in res.stderr.splitlines() if ln.startswith("golfpack: error") or "Traceback" in ln]
    assert len(errs) == 1 and "Traceback" not in res.stderr, res.stderr
    assert digest(inputs) == before
    for p in never:
        assert not Path(p).exists() and not list(Path(p).parent.glob(f".{Path(p).name}.tmp-*")), p
    return errs[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory, small_tokenizer, default_docs):
    d = tmp_path_factory.mktemp("bad")
    write_split(encode_documents(default_docs[:40], small_tokenizer), d, "t", "train")
    write_split(encode_documents(default_docs[40:44], small_tokenizer), d, "t", "val")
    cfg = ModelConfig(vocab_size=small_tokenizer.vocab_size, d_model=32, n_heads=2, n_kv_heads=1, n_passes=2,
                      seq_len=32)
    torch.manual_seed(0)
    save_checkpoint(d / "m", RecurrentLM(cfg), cfg, {"tokenizer_sha256": small_tokenizer.sha256,
                                                    "train": {"holdout_tokens": 4097}})
    res = CliRunner().invoke(main, ["pack", str(d / "m"), "-o", str(d / "m.gpk"), "--codecs", "zstd",
                                    "--route-signal", "none"])
    assert res.exit_code == 0, res.output
    return d


# --- tracebacks that became one line -------------------------------------------------------------------------
def test_checkpoint_missing_a_tensor_or_disagreeing_with_its_config(work, tmp_path):
    st = load_file(str(work / "m.safetensors"))
    cfg = json.loads((work / "m.json").read_text())
    st.pop("blocks.0.mlp.fc.weight")
    save_file(st, str(tmp_path / "a.safetensors"))
    (tmp_path / "a.json").write_text(json.dumps(cfg))
    line = fails(["pack", tmp_path / "a", "-o", tmp_path / "a.gpk"], 4, inputs=[tmp_path / "a.safetensors"],
                 never=[tmp_path / "a.gpk"])
    assert "missing 1 tensor(s) ['blocks.0.mlp.fc.weight']" in line and "a.safetensors" in line
    fails(["verify", tmp_path / "a", "--data", work, "--tokenizer", work.parent / "x"], 2)   # no such tokenizer
    cfg["model"]["config"]["mlp_mult"] = 3
    save_file(load_file(str(work / "m.safetensors")), str(tmp_path / "b.safetensors"))
    (tmp_path / "b.json").write_text(json.dumps(cfg))
    line = fails(["pack", tmp_path / "b", "-o", tmp_path / "b.gpk"], 4, never=[tmp_path / "b.gpk"])
    assert "shape mismatch" in line and "blocks.0.mlp.fc.weight is [64, 32], the config implies [96, 32]" in line


def test_verify_batch_size_zero(work, small_tokenizer):
    line = fails(["verify", work / "m.gpk", "--data", work, "--tokenizer", small_tokenizer.path,
                  "--batch-size", "0"], 2)
    assert "--batch-size 0" in line


def test_export_submission_onto_a_file_or_an_unwritable_place(work, tmp_path):
    (tmp_path / "afile").write_text("mine")
    assert "is a file" in fails(["export-submission", work / "m.gpk", "-o", tmp_path / "afile"], 9,
                                inputs=[tmp_path / "afile", work / "m.gpk"])
    assert "cannot create output folder" in fails(["export-submission", work / "m.gpk", "-o", "/proc/golfpack-x"], 9)


# --- wrong successes ------------------------------------------------------------------------------------------
def test_export_over_budget_says_so_and_exits_6(work, tmp_path, small_tokenizer):
    res = CliRunner().invoke(main, ["export-submission", str(work / "m.gpk"), "-o", str(tmp_path / "sub"),
                                    "--budget-bytes", "1000"])
    assert res.exit_code == 6 and "over budget by" in res.stdout and "over budget by" in res.stderr
    assert small_tokenizer.sha256[:12] in res.stdout and "fineweb" not in res.stdout


def test_reference_of_another_architecture_warns_and_of_another_tokenizer_fails_first(work, tmp_path,
                                                                                      small_tokenizer):
    cfg = ModelConfig(vocab_size=small_tokenizer.vocab_size, d_model=16, n_heads=2, n_kv_heads=1, n_passes=1,
                      seq_len=32)
    save_checkpoint(tmp_path / "other", RecurrentLM(cfg), cfg, {"tokenizer_sha256": small_tokenizer.sha256})
    res = CliRunner().invoke(main, ["verify", str(work / "m.gpk"), "--data", str(work), "--tokenizer",
                                    str(small_tokenizer.path), "--reference", str(tmp_path / "other"), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert any("different model" in w for w in rep["warnings"])
    assert any("not the checkpoint" in w and "was packed from" in w for w in rep["warnings"])
    assert "golfpack: warning: reference" in res.stderr
    same = json.loads(CliRunner().invoke(main, ["verify", str(work / "m.gpk"), "--data", str(work), "--tokenizer",
                                                str(small_tokenizer.path), "--reference", str(work / "m"),
                                                "--json"]).stdout)
    assert not [w for w in same["warnings"] if "reference" in w]    # the packed source: nothing to warn about
    save_checkpoint(tmp_path / "alien", RecurrentLM(cfg), cfg, {"tokenizer_sha256": "ab" * 32})
    res = CliRunner().invoke(main, ["verify", str(work / "m.gpk"), "--data", str(work), "--tokenizer",
                                    str(small_tokenizer.path), "--reference", str(tmp_path / "alien")])
    assert res.exit_code == E.MismatchError.exit_code and "alien" in res.stderr and "eval" not in res.stderr
    res = CliRunner().invoke(main, ["verify", str(work / "m.gpk"), "--data", str(work), "--tokenizer",
                                    str(small_tokenizer.path), "--reference", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "--reference" in res.stderr and "eval" not in res.stderr


# --- clobbering ---------------------------------------------------------------------------------------------
def test_outputs_golfpack_did_not_write_need_force_and_inputs_never(work, tmp_path, small_tokenizer):
    tok_copy = tmp_path / "tok.model"
    tok_copy.write_bytes(Path(small_tokenizer.path).read_bytes())
    line = fails(["pack", work / "m", "-o", tok_copy, "--codecs", "zstd", "--route-signal", "none"], 9,
                 inputs=[tok_copy, work / "m.safetensors"])
    assert "exists and is not a golfpack artifact" in line and "--force" in line
    res = CliRunner().invoke(main, ["pack", str(work / "m"), "-o", str(tok_copy), "--codecs", "zstd",
                                    "--route-signal", "none", "--force"])
    assert res.exit_code == 0 and tok_copy.read_bytes()[:4] == b"GPAK"
    res = CliRunner().invoke(main, ["pack", str(work / "m"), "-o", str(tok_copy), "--codecs", "zstd",
                                    "--route-signal", "none"])
    assert res.exit_code == 0                                  # an artifact golfpack wrote is replaced freely
    line = fails(["pack", work / "m", "-o", work / "m.json", "--force"], 9, inputs=[work / "m.json"])
    assert "same file as input" in line                        # an input, never, --force or not
    (tmp_path / "notes.safetensors").write_text("my notes")
    assert "not a golfpack checkpoint file" in fails(["unpack", work / "m.gpk", "-o", tmp_path / "notes"], 9,
                                                     inputs=[tmp_path / "notes.safetensors"])
    (tmp_path / "t_val_000000.bin").write_text("not a shard")
    text = tmp_path / "x.txt"
    text.write_text("hello world " * 50)
    assert "not a Parameter Golf token shard" in fails(
        ["data", text, "--tokenizer", small_tokenizer.path, "--out", tmp_path, "--name", "t"], 9,
        inputs=[tmp_path / "t_val_000000.bin"])
    (tmp_path / "chart.png").write_bytes(b"\x89PNG\r\n\x1a\n not ours")
    assert "not a golfpack chart" in fails(["audit", work / "m.gpk", "--plot", tmp_path / "chart.png"], 9,
                                           inputs=[tmp_path / "chart.png"])


def test_train_and_ingest_refuse_to_replace_files_they_did_not_write(work, tmp_path, small_tokenizer, monkeypatch):
    import core.train_job as T

    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("trained before checking its outputs"))
    (tmp_path / "model.json").write_text('{"my": "settings"}')
    line = fails(["train", "--data", work, "--tokenizer", small_tokenizer.path, "--out", tmp_path, "--steps", "1",
                  "--d-model", "32", "--n-heads", "2", "--n-kv-heads", "1"], 9, inputs=[tmp_path / "model.json"])
    assert "model.json exists and is not a golfpack checkpoint file" in line
    pt = tmp_path / "w.pt"
    torch.save({"tok_emb.weight": torch.zeros(4, 4)}, pt)
    (tmp_path / "ck.safetensors").write_text("precious")
    line = fails(["ingest", pt, "-o", tmp_path / "ck", "--tokenizer", small_tokenizer.path], 9,
                 inputs=[pt, tmp_path / "ck.safetensors"])
    assert "ck.safetensors exists and is not a golfpack checkpoint file" in line


# --- errors before minutes of work ---------------------------------------------------------------------------
def test_impossible_budget_and_unwritable_output_fail_before_any_calibration(work, tmp_path, monkeypatch):
    import quant.pack_job as J

    monkeypatch.setattr(J, "PackJob", lambda *a, **k: pytest.fail("calibrated before the cheap checks"))
    line = fails(["pack", work / "m", "-o", tmp_path / "x.gpk", "--budget-bytes", "1000"], 6,
                 never=[tmp_path / "x.gpk"])
    assert "--budget-bytes 1,000 cannot be met" in line and "counted code alone is" in line
    line = fails(["pack", work / "m", "-o", tmp_path / "nodir" / "sub" / "x.gpk"], 9)
    assert "does not exist" in line


# --- misleading quietly ---------------------------------------------------------------------------------------
def test_loss_above_ln_vocabulary_warns_of_another_tokenizer(work, tmp_path, small_tokenizer):
    rng = np.random.default_rng(0)
    write_split(rng.integers(0, small_tokenizer.vocab_size, 4000), tmp_path, "r", "val")
    res = CliRunner().invoke(main, ["verify", str(work / "m.gpk"), "--data", str(tmp_path), "--tokenizer",
                                    str(small_tokenizer.path), "--json"])
    rep = json.loads(res.stdout)
    if rep["val_loss"] > np.log(small_tokenizer.vocab_size):
        assert any("tokenized with another tokenizer" in w for w in rep["warnings"])
    own = json.loads(CliRunner().invoke(main, ["verify", str(work / "m.gpk"), "--data", str(work), "--tokenizer",
                                               str(small_tokenizer.path), "--json"]).stdout)
    assert not any("tokenizer" in w for w in own["warnings"]) or own["val_loss"] > np.log(small_tokenizer.vocab_size)


def test_loss_warning_rule():
    from verify.checks import loss_warning

    assert loss_warning(6.0, 400) and not loss_warning(5.9, 400)            # ln 400 = 5.99


def test_pgolf_hyperparameters_are_printed_and_a_wrong_mlp_power_detected(shared_data, tmp_path):
    text = tmp_path / "wiki.txt"
    text.write_text((shared_data / "text" / "wikitext2_test.raw").read_text(encoding="utf-8")[:20_000])
    tok = shared_data / "tokenizers" / "fineweb_1024_bpe.model"
    pt = shared_data / "pgolf" / "nolanvild" / "final_model.pt"
    res = CliRunner().invoke(main, ["verify", str(pt), "--data", str(text), "--tokenizer", str(tok), "--json"])
    rep = json.loads(res.stdout)
    hp = rep["pgolf_hyperparameters"]
    assert hp["mlp_power"] == {**hp["mlp_power"], "value": 2, "given": False}
    assert any("--mlp-power 3" in w for w in rep["warnings"])              # nolanvild trained relu^3
    right = json.loads(CliRunner().invoke(main, ["verify", str(pt), "--mlp-power", "3", "--data", str(text),
                                                 "--tokenizer", str(tok), "--json"]).stdout)
    assert right["warnings"] == [] and right["pgolf_hyperparameters"]["mlp_power"]["given"] is True


def test_option_errors_name_the_flag(work, tmp_path, small_tokenizer):
    assert "--budget-bytes -5: must be positive" in fails(["pack", work / "m", "-o", tmp_path / "x.gpk",
                                                           "--budget-bytes", "-5"], 2)
    assert "--route-fraction 1.5" in fails(["pack", work / "m", "-o", tmp_path / "x.gpk", "--route-fraction",
                                            "1.5"], 2)
    assert "--d-model 30" in fails(["train", "--data", work, "--tokenizer", small_tokenizer.path, "--out", tmp_path,
                                    "--d-model", "30", "--n-heads", "4", "--steps", "1"], 2)
    assert "--fractions 0.1,2.0" in fails(["experiment", work / "m.gpk", "--data", work, "--tokenizer",
                                           small_tokenizer.path, "--fractions", "0.1,2"], 2)


def test_verify_prints_the_file_sha256_and_labels_the_trailer(work, small_tokenizer):
    rep = json.loads(CliRunner().invoke(main, ["verify", str(work / "m.gpk"), "--data", str(work), "--tokenizer",
                                               str(small_tokenizer.path), "--json"]).stdout)
    data = (work / "m.gpk").read_bytes()
    assert rep["sha256"] == hashlib.sha256(data).hexdigest() and rep["trailer_sha256"] == data[-32:].hex()


def test_exit_codes_are_distinct_per_class_and_documented():
    classes = [E.UsageError, E.DataError, E.CheckpointError, E.ArtifactError, E.BudgetError, E.QuantError,
               E.MismatchError, E.OutputError]
    codes = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes) and E.ConfigError.exit_code == E.UsageError.exit_code
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Exit codes"):]
    for code in [*codes, E.INTERNAL_ERROR_EXIT_CODE]:
        assert f"| {code} |" in table, code
