"""PeriodFeed: evaluation periods for the Train loop (whole passes or N steps across passes), lockstep agreement,
resuming mid-pass from a checkpointed (pass, position)."""
import pytest

from autosrh_ray.distributed.feed import PeriodFeed


class Passes:
    """A source whose pass e yields (e, 0) … (e, n-1); records which passes were opened."""

    def __init__(self, n: int):
        self.n, self.opened = n, []

    def train_epoch(self, epoch):
        self.opened.append(epoch)
        return iter([(epoch, i) for i in range(self.n)])


class Item(tuple):
    def __len__(self):  # PeriodFeed counts samples with len(batch)
        return 1


def _items(source):
    class Wrapped:
        opened = source.opened

        def train_epoch(self, epoch):
            return (Item(b) for b in source.train_epoch(epoch))
    return Wrapped()


def test_whole_passes_are_periods():
    feed = PeriodFeed(_items(Passes(3)), eval_every_steps=0)
    assert [list(feed.period()) for _ in range(2)] == [[(0, 0), (0, 1), (0, 2)], [(1, 0), (1, 1), (1, 2)]]
    assert (feed.data_epoch, feed.position) == (2, 0) and feed.samples == 3


def test_periods_of_n_steps_cross_passes_and_resume_mid_pass():
    feed = PeriodFeed(_items(Passes(5)), eval_every_steps=3)
    first = [list(feed.period()) for _ in range(3)]
    assert first == [[(0, 0), (0, 1), (0, 2)], [(0, 3), (0, 4), (1, 0)], [(1, 1), (1, 2), (1, 3)]]
    assert (feed.data_epoch, feed.position) == (1, 4)
    rest = list(feed.period())
    source = Passes(5)
    resumed = PeriodFeed(_items(source), eval_every_steps=3, data_epoch=1, position=4)  # from the checkpoint
    assert list(resumed.period()) == rest == [(1, 4), (2, 0), (2, 1)]
    assert source.opened == [1, 2]


def test_a_rank_that_runs_out_ends_the_pass_on_every_rank():
    calls = []

    def agree(has_batch):  # another rank has only two batches per pass: its "no" wins on the third step
        calls.append(has_batch)
        return has_batch and len(calls) % 3 != 0

    feed = PeriodFeed(_items(Passes(5)), eval_every_steps=0, agree=agree)
    assert list(feed.period()) == [(0, 0), (0, 1)]
    assert (feed.data_epoch, feed.position) == (1, 0)


def test_an_empty_pass_is_an_error_not_an_endless_loop():
    feed = PeriodFeed(_items(Passes(0)), eval_every_steps=4)
    with pytest.raises(ValueError, match="no full batch"):
        list(feed.period())
