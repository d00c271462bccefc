"""`golfpack pack` with the planner: --budget-bytes fills the budget, --plan-out writes the plan, --plan reads it."""

import json

from click.testing import CliRunner

from cli import main
from packer.reader import read_artifact


def test_pack_budget_plan_out_and_plan(tiny_dir, tmp_path):
    run = CliRunner()
    fast = ["--codecs", "zstd"]                                  # ANS is slow on tiny tensors
    base = run.invoke(main, ["pack", str(tiny_dir / "tiny"), "-o", str(tmp_path / "d.gpk"), "--json", *fast])
    assert base.exit_code == 0, base.output
    default = json.loads(base.output[base.output.index("{"):])
    assert default["planning"]["mode"] == "default" and set(default["scales"].values()) >= {"gptq"}
    budget = default["total_bytes"] - 3000                       # forces lower precision somewhere
    res = run.invoke(main, ["pack", str(tiny_dir / "tiny"), "-o", str(tmp_path / "p.gpk"), "--budget-bytes",
                            str(budget), "--formats", "int8_row,int6_row,int4_row,int3_row", "--plan-out",
                            str(tmp_path / "plan.json"), "--json", *fast])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output[res.output.index("{"):])
    assert rep["planning"]["mode"] == "planner" and rep["total_bytes"] <= budget
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert {n: t["format"] for n, t in plan["tensors"].items()} == {n: rep["plan"][n] for n in plan["tensors"]}
    again = run.invoke(main, ["pack", str(tiny_dir / "tiny"), "-o", str(tmp_path / "q.gpk"), "--plan",
                              str(tmp_path / "plan.json"), "--budget-bytes", str(budget), *fast])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "q.gpk").read_bytes() == (tmp_path / "p.gpk").read_bytes()
    entries = {t["name"]: t for t in read_artifact(tmp_path / "q.gpk").manifest["tensors"]}
    for n, t in plan["tensors"].items():                            # the manifest names the method only
        assert entries[n]["format"] == t["format"]
        assert entries[n].get("scale") == (t["scale"].split(":")[0] if t["scale"] else None)
