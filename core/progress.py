"""Progress reporting on stderr: a live bar on a terminal, a few plain lines otherwise. Never stdout."""

from __future__ import annotations

import sys
import time


class Progress:
    """`update(done, **fields)` with done in [0, total]; redraws at most every 0.2 s (every 10% off a tty)."""

    def __init__(self, label: str, total: float, unit: str = "", enabled: bool = True) -> None:
        self.label, self.total, self.unit, self.enabled = label, max(float(total), 1e-9), unit, enabled
        self.tty = sys.stderr.isatty()
        self._last_draw = 0.0
        self._last_decile = -1
        self.start = time.perf_counter()

    def update(self, done: float, **fields) -> None:
        if not self.enabled:
            return
        frac = min(max(done / self.total, 0.0), 1.0)
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        now = time.perf_counter()
        if self.tty:
            if now - self._last_draw < 0.2 and frac < 1.0:
                return
            self._last_draw = now
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% {info}\033[K")
            if frac >= 1.0:
                sys.stderr.write("\n")
        else:
            decile = int(frac * 10)
            if decile == self._last_decile:
                return
            self._last_decile = decile
            sys.stderr.write(f"{self.label}: {frac * 100:5.1f}% {info}\n")
        sys.stderr.flush()

    def log(self, message: str) -> None:
        if self.enabled:
            sys.stderr.write(("\n" if self.tty else "") + message + "\n")
            sys.stderr.flush()
