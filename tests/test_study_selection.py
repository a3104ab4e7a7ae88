"""Which trial a study hands on (without Ray): the finished trial with the best score by the study's metric —
the lowest loss, the highest AUC — never a trial the scheduler stopped, whatever it last reported."""
from __future__ import annotations

import pytest

from autosrh_ray.config import load_config
from autosrh_ray.study import Trial, best_trial, metric_name


def _trial(k: int, score, last=None, stop_reason: str = "patience") -> Trial:
    return Trial(overrides={"search.K": k}, score=score, epochs=3, stop_reason=stop_reason, seconds=1.0,
                 last=score if last is None else last)


@pytest.mark.parametrize("metric, best_k", [("loss", 8), ("auc", 12)])
def test_the_best_finished_trial_by_the_studys_metric_is_chosen(metric, best_k):
    _, mode = metric_name(load_config(None, [f"tune.metric={metric}"]))
    stopped = _trial(2, None, last=0.0 if mode == "min" else 1.0, stop_reason="scheduler")  # "best" last report
    trials = [_trial(4, 0.45), stopped, _trial(8, 0.41), _trial(12, 0.52), _trial(16, 0.47)]
    best = best_trial(trials, mode)
    assert best.overrides == {"search.K": best_k}
    finished = [t.score for t in trials if t.score is not None]
    assert best.score == (min(finished) if mode == "min" else max(finished))


def test_a_tie_keeps_the_earlier_trial():
    first, second = _trial(4, 0.4), _trial(8, 0.4)
    assert best_trial([first, second, _trial(12, 0.5)], "min") is first
    assert best_trial([_trial(12, 0.3), first, second], "max") is first
