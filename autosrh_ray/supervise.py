"""No silent waits: a workflow that hears nothing from its stages for ``ray.stall_timeout_s`` fails with one line.

Everything that shows progress — an epoch line, a batch of rows done on a Train worker, a study trial's report,
a prepared chunk — calls :func:`beat`; code about to wait on something names it with :func:`doing`.
:func:`supervised` runs the workflow in a helper thread while the calling thread waits on it. That thread

* raises :class:`StallError` (naming what it waited on, why, and the key to raise) when no beat came for the
  timeout — ``ray.get`` inside Ray Train or Tune blocks in C++ and hears no signal, so the wait must be ours;
* hears Ctrl-C at once (a ``KeyboardInterrupt``): Ray Train's and Tune's own SIGINT handlers, installed only in
  the main thread, never see it, so an interrupted study is never taken for a finished one.

The helper thread is a daemon: after a stall or an interrupt the process ends (the CLI's job) and Ray's shutdown
ends the run's Ray processes. A caller that goes on in the same process (a notebook, a test) gets the run's
resources back after a stall (``release()`` is called before the error is raised), and after either
:func:`abandoned` tells the run's own loops (the study's Tune callback) to stop. Pure Python: no Ray import here
(the Ray side is passed in).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")
POLL_SECONDS = 0.5


class StallError(RuntimeError):
    """A stage or trial reported nothing for ``ray.stall_timeout_s``; the message is one line."""


class _State:
    def __init__(self) -> None:
        self.last = time.monotonic()
        self.what = "the workflow"
        self.depth = 0  # nested supervised() calls run their work directly
        self.abandoned = False


_state = _State()


def beat() -> None:
    """Progress was made (cheap: one clock read)."""
    _state.last = time.monotonic()


def doing(what: str) -> None:
    """Name what the workflow waits on next (``[search] Train run …``, ``study trial …``); counts as a beat."""
    _state.what = what
    beat()


def beating(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` that also beats: every printed line is progress."""
    def logged(line: str) -> None:
        beat()
        log(line)

    return logged


def abandoned() -> bool:
    """True once the supervised run was given up (stall or Ctrl-C): loops of the run still going should stop."""
    return _state.abandoned


def supervised(call: Callable[[], T], timeout_s: Optional[float],
               waiting_for: Callable[[], str] = lambda: "", release: Callable[[], None] = lambda: None) -> T:
    """``call()`` in a daemon thread, waited on here: its result or exception; :class:`StallError` after
    ``timeout_s`` without a beat (``None`` or ≤ 0: no limit); ``KeyboardInterrupt`` at once on Ctrl-C.
    ``waiting_for()`` describes what the run waits on (pending resources) for the stall's message; ``release()``
    frees what the stalled run holds, before the error is raised."""
    if _state.depth:
        return call()
    outcome: dict = {}
    _state.abandoned = False

    def work() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:  # handed to the waiting thread
            outcome["error"] = err

    worker = threading.Thread(target=work, name="autosrh-workflow", daemon=True)
    _state.depth += 1
    doing("the workflow")
    try:
        worker.start()
        while worker.is_alive():
            worker.join(POLL_SECONDS)
            silent = time.monotonic() - _state.last
            if worker.is_alive() and timeout_s and timeout_s > 0 and silent > timeout_s:
                message = stall_message(_state.what, silent, waiting_for())
                _give_up(release)
                raise StallError(message)
    except KeyboardInterrupt:  # at once: the CLI exits now (Ray's shutdown ends the run's processes)
        _state.abandoned = True
        raise
    finally:
        _state.depth -= 1
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _give_up(release: Callable[[], None]) -> None:
    _state.abandoned = True
    try:
        release()
    except Exception:  # best effort: the error being raised is what the caller must see
        pass


def stall_message(what: str, silent: float, waiting_for: str) -> str:
    """The one line a stall fails with."""
    seen = f" (Ray: {waiting_for})" if waiting_for else ""
    return (f"{what} reported nothing for {silent:.0f} s{seen}; if it is only slow, raise ray.stall_timeout_s "
            f"(0: no limit)")
