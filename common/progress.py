"""Progress of long stages on stderr, never stdout: a tqdm bar on a terminal, a few plain lines otherwise.

Both show done/total, the elapsed time, the time remaining and the rate (tqdm computes them: on a terminal
its live bar, off one `tqdm.format_meter` lines at every tenth of the work, so logs stay short and readable).
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

PLAIN_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class Progress:
    """`update(done, **fields)` with done in [0, total]; `log(message)` prints a line without breaking the bar."""

    def __init__(self, label: str, total: float, unit: str = "it", enabled: bool = True) -> None:
        self.label, self.total, self.unit, self.enabled = label, max(float(total), 1e-9), unit, enabled
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self._last_decile = -1
        self._bar = (tqdm(total=total, desc=label, unit=unit, file=sys.stderr, dynamic_ncols=True,
                          mininterval=0.2, leave=True) if enabled and self.tty else None)

    @staticmethod
    def _fields(fields: dict) -> str:
        return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())

    def update(self, done: float, **fields) -> None:
        if not self.enabled:
            return
        frac = min(max(done / self.total, 0.0), 1.0)
        info = self._fields(fields)
        if self._bar is not None:
            if info:
                self._bar.set_postfix_str(info, refresh=False)
            self._bar.update(done - self._bar.n)
            if frac >= 1.0:
                self._bar.close()
            return
        decile = int(frac * 10)
        if decile == self._last_decile:
            return
        self._last_decile = decile
        total = int(self.total) if float(self.total).is_integer() else self.total
        line = tqdm.format_meter(done, total, time.perf_counter() - self.start, prefix=self.label,
                                 unit=self.unit, bar_format=PLAIN_FORMAT, postfix=info or None)
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
