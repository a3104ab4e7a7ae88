"""Progress of long passes: done / total, rate and ETA.

In an interactive terminal a redrawn bar (tqdm); anywhere else (a pipe, a file, ``ray job logs``) a log line at
most every few seconds and one at the end, so every reader sees that work is moving and when it will end.
Lines printed while a bar is drawn go through :func:`terminal_log`, which keeps the bar below them.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

from .logs import Log
from .supervise import beat


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RateLine:
    """``update(done)`` logs ``[label] done/total unit (p%), rate unit/s, ETA h:mm:ss`` when ``every`` seconds
    have passed since the last line, and when ``done`` reaches ``total`` (unless not ``final_line``)."""

    def __init__(self, label: str, total: int, log: Log, unit: str = "rows", every: float = 10.0,
                 clock: Callable[[], float] = time.perf_counter, final_line: bool = True):
        self.label, self.total, self.log, self.unit, self.every, self.clock = label, total, log, unit, every, clock
        self.final_line = final_line
        self.start = self.last = clock()

    def update(self, done: int) -> None:
        now = self.clock()
        if done >= self.total and not self.final_line:
            return
        if done < self.total and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / self.total if self.total else 100.0
        tail = f"ETA {_clock(eta)}" if done < self.total and eta != float("inf") else f"in {_clock(elapsed)}"
        self.log(f"[{self.label}] {done:,}/{self.total:,} {self.unit} ({pct:.0f}%), {rate:,.0f} {self.unit}/s, {tail}")


def interactive() -> bool:
    """Whether stdout is a terminal a person watches (bars) rather than a pipe or a log (lines)."""
    return sys.stdout.isatty()


def terminal_log(line: str) -> None:
    """Print a line above any progress bar on the terminal (plain ``print`` where there is no bar)."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)


class Progress:
    """``update(done)`` of one pass over ``total`` units: a tqdm bar when ``bar`` (default: stdout is a
    terminal), else :class:`RateLine` lines through ``log``. The bar closes itself when ``done`` reaches
    ``total``, or on :meth:`close`."""

    def __init__(self, label: str, total: int, log: Log, unit: str = "rows", bar: Optional[bool] = None,
                 every: float = 10.0, final_line: bool = True):
        self.total = total
        self._bar = None
        if interactive() if bar is None else bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=f"[{label}]", unit=f" {unit}", unit_scale=True, file=sys.stdout,
                             dynamic_ncols=True, leave=False, mininterval=0.2)
            every = float("inf")  # the bar shows the way; one line at the end stays in the scrollback
        self._line = RateLine(label, total, log, unit, every, final_line=final_line)

    def update(self, done: int) -> None:
        beat()
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            self._bar.refresh()  # updates come at most once a second: draw each one
            if done >= self.total:
                self.close()
        self._line.update(done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
