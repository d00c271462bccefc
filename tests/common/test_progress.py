"""Progress (common/progress.py): on stderr only, with rate and time remaining from tqdm; a few plain lines when
stderr is not a terminal; nothing at all when disabled."""

import re

from common.progress import Progress


def test_plain_lines_off_a_terminal_carry_rate_and_remaining(capsys):
    bar = Progress("eval", 40, unit="win")
    for i in range(41):
        bar.update(i, tensor="w")
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert 2 <= len(lines) <= 12                                  # every tenth of the work, not every step
    assert re.fullmatch(r"eval: 100% 40/40 \[\d\d:\d\d<\d\d:\d\d, [\d.]+win/s, tensor=w\]", lines[-1]), lines[-1]
    assert all("<" in line and "/s" in line for line in lines[1:])


def test_disabled_progress_prints_nothing(capsys):
    bar = Progress("eval", 10, enabled=False)
    bar.update(5)
    bar.log("hello")
    assert capsys.readouterr() == ("", "")
