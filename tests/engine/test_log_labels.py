"""Every epoch line names its run as the Ray path does: in process, each budget's retrain says which budget
(``[retrain cr5]``, ``[retrain cr10]``), never a bare ``[retrain]`` that cannot be told apart."""
from __future__ import annotations

import re

from autosrh_ray.config import load_config
from autosrh_ray.data.local import prepare_synthetic
from autosrh_ray.methods.in_process import run_all_in_process

SMALL = ["dataset.synthetic.rows=3000", "dataset.synthetic.categorical_fields=4", "dataset.synthetic.signal_fields=2",
         "dataset.synthetic.numerical_fields=1", "dataset.synthetic.vocab_size=100", "model.hidden=[8]",
         "search.K=4", "search.L=2", "train.batch_size=256", "search.max_epochs=2", "train.max_epochs=2",
         "train.patience=1", "prune.cr=[5, 10]", "ray.num_workers=0"]


def test_in_process_epoch_lines_name_the_budget(tmp_path):
    config = load_config(None, SMALL)
    prepared = prepare_synthetic(config, tmp_path)
    lines: list[str] = []
    run_all_in_process(config, prepared, prepared.load_split("train"), prepared.load_split("valid"), lines.append)
    labels = {m[1] for line in lines if (m := re.match(r"\[([^\]]+)\] epoch \d+:", line))}
    assert labels == {"search", "retrain cr5", "retrain cr10"}, lines
    stops = {m[1] for line in lines if (m := re.match(r"\[([^\]]+)\] stopped by", line))}
    assert stops == labels  # each run's summary line carries the same label as its epoch lines
