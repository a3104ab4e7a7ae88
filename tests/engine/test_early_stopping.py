"""Stopping rules of the in-process loops: a scripted validation-loss sequence decides the stop epoch, the reason
and the state the model ends in (a tie keeps the earlier evaluation); evaluation periods of N steps continue
across passes."""
import itertools

import pytest
import torch

from autosrh_ray.engine.search import BiLevelSearch
from autosrh_ray.engine.training import StopRule, Trainer, evaluation_periods, search, train_until_stopped

from .helpers import random_batch, tiny_model

LOSSES = [0.9, 0.7, 0.6, 0.65, 0.61, 0.62, 0.5, 0.4]  # best so far at 0, 1, 2; then three evaluations worse


def _scripted(monkeypatch, losses):
    """Replace the whole-split evaluation with the scripted log losses (one per evaluation)."""
    script = iter(losses)
    monkeypatch.setattr("autosrh_ray.engine.training.evaluate", lambda model, batches, task: {"logloss": next(script)})


def _batches(epoch):
    return [random_batch(seed=100 * epoch + i) for i in range(3)]


@pytest.mark.parametrize("patience, stop_epochs, best", [(2, 5, 2), (3, 6, 2), (5, 8, 7)])
@pytest.mark.parametrize("stage", ["fit", "search"])
def test_scripted_validation_losses_decide_stop_and_restore_the_best_state(monkeypatch, stage, patience,
                                                                           stop_epochs, best):
    _scripted(monkeypatch, LOSSES)
    model = tiny_model("fm")
    snapshots = []
    on_epoch = lambda epoch, m: snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
    rule = StopRule(max_epochs=len(LOSSES), patience=patience)
    if stage == "fit":
        result = train_until_stopped(Trainer(model, "classification", lr=0.05).step, model, _batches, _batches,
                                     "classification", rule, on_epoch)
    else:
        searcher = BiLevelSearch(model, "classification", lr=0.05, lr_alpha=0.05)
        result = search(model, searcher, _batches, _batches, _batches, "classification", rule, on_epoch)
    assert result.epochs == stop_epochs == len(snapshots)
    assert result.stop_reason == ("patience" if stop_epochs < len(LOSSES) else "max_epochs")
    assert result.best_epoch == best and result.best_valid["logloss"] == LOSSES[best]
    assert result.steps == 3 * stop_epochs
    final = model.state_dict()
    for key, value in snapshots[best].items():  # α included for the search
        assert torch.equal(final[key], value), key
    if best < stop_epochs - 1:  # not simply the last state
        assert any(not torch.equal(final[k], v) for k, v in snapshots[-1].items())


def test_a_tie_keeps_the_earlier_evaluation_and_does_not_reset_patience(monkeypatch):
    """Only a strictly lower validation loss is "better" (StopRule): a later equal loss is no improvement."""
    losses = [0.9, 0.6, 0.6, 0.7, 0.5]
    _scripted(monkeypatch, losses)
    model = tiny_model("fm")
    snapshots = []
    on_epoch = lambda epoch, m: snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
    result = train_until_stopped(Trainer(model, "classification", lr=0.05).step, model, _batches, _batches,
                                 "classification", StopRule(max_epochs=len(losses), patience=2), on_epoch)
    assert (result.best_epoch, result.epochs, result.stop_reason) == (1, 4, "patience")
    final = model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in snapshots[1].items())
    assert any(not torch.equal(final[k], v) for k, v in snapshots[2].items())


def test_evaluation_periods_of_n_steps_continue_across_passes():
    passes = lambda epoch: iter([(epoch, i) for i in range(5)])
    periods = evaluation_periods(passes, eval_every_steps=3)
    got = [list(next(periods)) for _ in range(4)]
    assert got == [[(0, 0), (0, 1), (0, 2)], [(0, 3), (0, 4), (1, 0)], [(1, 1), (1, 2), (1, 3)],
                   [(1, 4), (2, 0), (2, 1)]]
    whole = evaluation_periods(passes)
    assert [list(next(whole)) for _ in range(2)] == [[(0, i) for i in range(5)], [(1, i) for i in range(5)]]


def test_evaluation_periods_on_an_empty_split_fail_instead_of_spinning():
    periods = evaluation_periods(lambda epoch: iter([]), eval_every_steps=2)
    with pytest.raises(ValueError, match="train split is empty"):
        list(itertools.islice(next(periods), 2))
