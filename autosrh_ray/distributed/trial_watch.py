"""The study's eyes in the driver (a Ray Tune callback, pickled with the experiment so a restored study keeps it):
every trial's reports printed as they arrive, the workflow's watchdog fed, and a trial that reports nothing for
``ray.stall_timeout_s`` stopped and named; placement groups a stopped trial's Train run left behind are removed
(:mod:`.orphan_groups`)."""
from __future__ import annotations

import hashlib
import json
import time
from typing import Optional

import ray
from ray.tune import Callback

from ..logs import Log
from ..supervise import abandoned, beat, stall_message
from .orphan_groups import OrphanSweeper
from .waiting_for import ray_waiting_for

SWEEP_EVERY_S = 5.0


FINISHED = "trial_finished"  # the key of a trial's last report: it finished (not stopped by the scheduler)


def trial_key(overrides: dict) -> str:
    """A trial's short, stable name from its overrides."""
    return hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:10]


class TrialWatch(Callback):
    """A Tune callback in the study's driver: prints each trial's reports as they arrive, beats the workflow's
    watchdog, and stops a running trial that reports nothing for ``timeout_s`` (its actor is killed: Tune marks
    it failed, frees its resources and goes on; :attr:`stalled` keeps the one-line reason by trial key)."""

    def __init__(self, metric: str, timeout_s: float, log: Log, sweeper: Optional[OrphanSweeper] = None):
        self.metric, self.timeout_s, self.log, self.sweeper = metric, timeout_s, log, sweeper
        self.stalled: dict[str, str] = {}
        self._last: dict[str, float] = {}
        self._swept = 0.0

    def setup(self, **info) -> None:
        self._last = {}  # a restored study starts its clocks anew

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._heard(trial)
        self.log(f"study: trial {_overrides(trial)} started")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self._heard(trial)
        if FINISHED in result:
            return  # its summary line comes with on_trial_complete
        value = result.get(self.metric)
        shown = "–" if value is None else f"{value:.5f}"
        self.log(f"study: trial {_overrides(trial)} evaluation {result.get('training_iteration', '?')}: "
                 f"{self.metric} {shown}")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._heard(trial)
        last = trial.last_result or {}
        score = last.get(self.metric)
        shown = "–" if score is None else format(score, ".5f")
        if FINISHED in last:
            self.log(f"study: trial {_overrides(trial)} finished: {self.metric} {shown} at the study budget")
        else:  # the scheduler stopped it: its last number is the soft (unpruned) model's
            self.log(f"study: trial {_overrides(trial)} stopped by the scheduler after "
                     f"{last.get('training_iteration', '?')} evaluations (last {self.metric} {shown})")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._heard(trial)
        if trial_key(_overrides(trial)) not in self.stalled:
            self.log(f"study: trial {_overrides(trial)} failed (see {getattr(trial, 'path', 'its trial directory')})")

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if abandoned():  # the workflow gave up (a stall, Ctrl-C) and its caller goes on: end the study's loop
            raise RuntimeError("the study was given up by its workflow")
        now = time.monotonic()
        if self.sweeper is not None and now - self._swept >= SWEEP_EVERY_S:
            self._swept = now
            self.sweeper.sweep()
        if not self.timeout_s:
            return
        for trial in trials:
            key = trial_key(_overrides(trial))
            if trial.status != "RUNNING" or key in self.stalled:
                continue
            silent = now - self._last.setdefault(trial.trial_id, now)
            if silent > self.timeout_s:
                self._stop_stalled(trial, key, silent)

    def _heard(self, trial) -> None:
        beat()
        self._last[trial.trial_id] = time.monotonic()

    def _stop_stalled(self, trial, key: str, silent: float) -> None:
        message = stall_message(f"study trial {_overrides(trial)}", silent, ray_waiting_for())
        self.stalled[key] = message
        self.log(f"study: {message}; marked failed, the study goes on")
        actor = getattr(getattr(trial, "temporary_state", None), "ray_actor", None)
        if actor is not None:
            ray.kill(actor, no_restart=True)
        beat()


def _overrides(trial) -> dict:
    return dict(getattr(trial, "config", None) or {})
