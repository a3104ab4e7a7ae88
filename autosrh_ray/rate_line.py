"""Progress of long passes as log lines: done / total, rate and ETA, at most one line every few seconds (and
one at the end), so a terminal, a pipe and ``ray job logs`` all show that work is moving and when it will end."""
from __future__ import annotations

import time
from typing import Callable

Log = Callable[[str], None]


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RateLine:
    """``update(done)`` logs ``[label] done/total unit (p%), rate unit/s, ETA h:mm:ss`` when ``every`` seconds
    have passed since the last line, and always when ``done`` reaches ``total``."""

    def __init__(self, label: str, total: int, log: Log, unit: str = "rows", every: float = 10.0,
                 clock: Callable[[], float] = time.perf_counter):
        self.label, self.total, self.log, self.unit, self.every, self.clock = label, total, log, unit, every, clock
        self.start = self.last = clock()

    def update(self, done: int) -> None:
        now = self.clock()
        if done < self.total and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / self.total if self.total else 100.0
        tail = f"ETA {_clock(eta)}" if done < self.total and eta != float("inf") else f"in {_clock(elapsed)}"
        self.log(f"[{self.label}] {done:,}/{self.total:,} {self.unit} ({pct:.0f}%), {rate:,.0f} {self.unit}/s, {tail}")
