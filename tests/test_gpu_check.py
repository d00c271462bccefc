"""bench/gpu_check.sh, the one-GPU device check, kept runnable where no GPU is: its --tiny mode runs every step
(default packs twice, a planned pack, verify, the compare verifies, a short train) on the CPU with a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_device_check_runs_every_step_in_tiny_mode(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--tiny", "--work", str(tmp_path / "w"),
                           "--out", str(out)], check=False, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    failed = {k: s["stderr_tail"] for k, s in rep["steps"].items() if s["exit_code"] != 0}
    assert failed == {}
    assert rep["mode"] == "tiny" and rep["ok"] and rep["default_identical"]
    assert set(rep["steps"]) == {"pack_default_cpu", "pack_default_cpu-again", "pack_planned_cpu", "verify_cpu",
                                 "verify_compare_cpu", "verify_compare_cpu-again", "train_cpu"}
    assert 0.99 * 100_000 <= rep["planned_audit_total_bytes"] <= 100_000
    assert rep["verify_bpb_difference"] == 0.0          # the same device twice: the same digits
    assert rep["steps"]["verify_cpu"]["tokens"] == 4096 and rep["steps"]["verify_cpu"]["partial"] is True
