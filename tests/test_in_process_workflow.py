"""The workflow with its stages in this process (``ray.num_workers: 0``) trains and stops on train and validation
only: the test split is read once, by the final evaluation, after every model (the UE reference included) is
trained."""
from __future__ import annotations

from autosrh_ray import workflow
from autosrh_ray.data.prepared import PreparedData

from .distributed.helpers import prepared_small

FINAL = "final evaluation"


def test_the_test_split_is_read_once_by_the_final_evaluation(ray_cluster, tmp_path, monkeypatch):
    config, prepared = prepared_small(tmp_path / "data", "ray.num_workers=0", "report.plots=false")
    reads: list = []
    load_split, stream, evaluate = PreparedData.load_split, workflow.iter_split_batches, workflow.evaluate_on_test

    def loaded(self, name):
        reads.append(("load", name))
        return load_split(self, name)

    def streamed(prepared, split, batch_size):
        reads.append(("stream", split))
        return stream(prepared, split, batch_size)

    def final(*args, **kwargs):
        reads.append(FINAL)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(PreparedData, "load_split", loaded)
    monkeypatch.setattr(workflow, "iter_split_batches", streamed)
    monkeypatch.setattr(workflow, "evaluate_on_test", final)
    report = workflow.run(config, tmp_path / "out", prepared=prepared, log=lambda _: None)
    before = reads[:reads.index(FINAL)]
    assert ("load", "train") in before and ("load", "valid") in before
    assert not [r for r in before if "test" in r], reads
    assert reads[len(before):] == [FINAL, ("stream", "test")]
    assert report["stages"]["search"]["epochs"] > 0 and report["reference"]["method"] == "uniform"
    assert 0.0 < report["test"]["auc"] < 1.0
