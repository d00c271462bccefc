"""Stage accounting: wall and CPU time add up per name, and the peak memory of the process tree includes a live
worker process's memory (which this process's own peak cannot see)."""

from __future__ import annotations

import subprocess
import sys
import time

from common.stages import Stages, rss_bytes, tree_rss_bytes


def test_tree_peak_sees_a_child_process_memory():
    st = Stages()
    grab = "import time; b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.0)"
    with st.stage("child"):
        proc = subprocess.Popen([sys.executable, "-c", grab])
        proc.wait(timeout=60)
    row = st.report()["child"]
    assert row["calls"] == 1 and row["wall_s"] >= 1.0
    assert row["peak_tree_rss_bytes"] >= row["peak_rss_bytes"] + (150 << 20)
    assert tree_rss_bytes() >= rss_bytes() > 0


def test_repeated_stages_add_up():
    st = Stages()
    for _ in range(2):
        with st.stage("s"):
            t0 = time.process_time()
            while time.process_time() - t0 < 0.05:
                pass
    row = st.report()["s"]
    assert row["calls"] == 2 and row["cpu_s"] >= 0.1 and row["wall_s"] >= 0.1
