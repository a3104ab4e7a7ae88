"""PEP: the soft threshold is the re-parameterisation it claims, the pruning stage stops when the kept count
reaches the budget, the retrain starts from the rewound initial weights of exactly the budget's entries (packed) and
keeps that layout."""
from __future__ import annotations

import torch

from autosrh_ray.artifact.budget import bitmap_span, embedding_bytes, kept_for_bytes
from autosrh_ray.config import load_config
from autosrh_ray.data.local import prepare_synthetic
from autosrh_ray.engine.packed import kept_of
from autosrh_ray.engine.pep import ThresholdEmbedding
from autosrh_ray.engine.prune import kept_count, topk_mask
from autosrh_ray.methods.graph import EMBEDDING, initial_state, run_graph
from autosrh_ray.methods.in_process import InProcessExecutor


def test_soft_threshold_reparameterisation():
    torch.manual_seed(0)
    emb = ThresholdEmbedding(torch.zeros(10, dtype=torch.long), 4, init_threshold=-1.0, l2=0.5,
                             init_std=0.5).double()
    ids = torch.tensor([[1, 7], [3, 3]])
    values = torch.tensor([[1.0, 2.0], [0.5, 1.0]], dtype=torch.float64)
    v, g = emb.weight[ids], torch.sigmoid(emb.threshold[ids])
    expected = torch.sign(v) * torch.clamp(v.abs() - g, min=0) * values.unsqueeze(-1)
    assert torch.allclose(emb(ids, values), expected, atol=1e-12)
    assert emb.kept_count() == int((emb.weight.abs() > torch.sigmoid(emb.threshold)).sum())
    rows = ids.unique()
    assert torch.allclose(emb.penalty(ids), 0.5 * emb.thresholded(rows).pow(2).sum())
    emb.penalty(ids).backward()
    assert emb.threshold.grad is not None  # the thresholds learn

KEPT = "embedding.kept.weight"  # the packed state's kept values


class RecordingExecutor(InProcessExecutor):
    """Keeps the state every stage starts from."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.starts: list[tuple[str, dict]] = []

    def train(self, stage, state, rule, tag=""):
        self.starts.append((stage, state))
        return super().train(stage, state, rule, tag)


def test_pep_reaches_the_budget_then_retrains_the_rewound_kept_entries(tmp_path):
    config = load_config(overrides=["search.method=pep", "model.name=fm", "search.K=16", "train.batch_size=1024",
                                    "dataset.synthetic.rows=40000", "prune.cr=10", "search.pep_l2=0.01"])
    prepared = prepare_synthetic(config, tmp_path)
    train, valid = prepared.load_split("train"), prepared.load_split("valid")
    executor = RecordingExecutor(config, prepared, train, valid, log=lambda _: None)
    initial = initial_state(config, prepared)
    ((final, result),) = run_graph(config, executor, initial, log=lambda _: None)
    budget = kept_count(prepared.num_features, 16, 10)
    pep = result.stages["pep"]
    assert pep.stop_reason == "budget"  # the thresholds pruned down to the budget before patience ran out
    assert kept_of(final) == budget == result.budget.kept
    (stage, start), = [(s, st) for s, st in executor.starts if s == "retrain"]
    rows = torch.repeat_interleave(torch.arange(start["embedding.indptr"].numel() - 1), start["embedding.indptr"].diff())
    kept_initial = initial[EMBEDDING][rows, start["embedding.dims"].long()]
    assert torch.equal(start[KEPT].view(-1), kept_initial)  # lottery-ticket rewind of the kept entries
    assert "embedding.threshold" not in start and "embedding.embedding.weight" not in start
    assert torch.equal(final["embedding.indptr"], start["embedding.indptr"])  # the retrain keeps the layout
    assert not torch.equal(final[KEPT], start[KEPT])  # and the kept entries were retrained


class EndsRecorder(RecordingExecutor):
    """Also keeps the state every stage ended with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ends: list[tuple[str, dict]] = []

    def train(self, stage, state, rule, tag=""):
        result, end = super().train(stage, state, rule, tag)
        self.ends.append((stage, end))
        return result, end


def test_a_byte_budget_prunes_once_then_each_precision_keeps_what_fits_by_margin(tmp_path):
    config = load_config(overrides=["search.method=pep", "model.name=fm", "search.K=16", "train.batch_size=1024",
                                    "dataset.synthetic.rows=40000", "prune.cr=[]", "prune.bytes_cr=12",
                                    "search.pep_l2=0.01", "search.L=1"])
    prepared = prepare_synthetic(config, tmp_path)
    executor = EndsRecorder(config, prepared, prepared.load_split("train"), prepared.load_split("valid"),
                            log=lambda _: None)
    results = run_graph(config, executor, initial_state(config, prepared), log=lambda _: None)
    (pruning,) = [end for stage, end in executor.ends if stage == "pep"]  # one pruning run for the budget
    margin = pruning[EMBEDDING].abs() - torch.sigmoid(pruning["embedding.threshold"])
    budget_bytes = prepared.num_features * 16 * 4 // 12
    kept = {}
    for final, result in results:
        b = result.budget
        assert b.group == "bytes_cr12" and b.bytes == budget_bytes
        assert b.kept == kept_for_bytes(margin, budget_bytes, b.precision, b.block_starts, b.int_scales) == \
            kept_of(final)
        counts = topk_mask(margin, b.kept).sum(dim=1)
        assert embedding_bytes(b.kept, int((counts > 0).sum()), bitmap_span(counts), 16, b.precision, b.int_scales,
                               len(b.block_starts)) <= budget_bytes
        kept[b.precision + ("-dim" if b.int_scales == "dim" else "")] = b.kept
    retrain_starts = [start for stage, start in executor.starts if stage == "retrain"]
    assert len(retrain_starts) == len(results) == 6  # 4 precisions, int8 and int4 again with dim scales
    # fewer bits a value, more entries in the same bytes (int8's 4 B of scale and bias a row can cost more than
    # fp16's values where rows keep few dims; int4 never more than int8)
    assert min(kept["fp16"], kept["int8"]) > kept["fp32"] and kept["int4"] > kept["int8"]
    assert kept["int8-dim"] > kept["int8"] and kept["int4-dim"] > kept["int4"]  # K·4 B of scales, not 4 B a row
    for start, (_, result) in zip(retrain_starts, results):  # each keeps its best entries by PEP's margin
        rows = torch.repeat_interleave(torch.arange(start["embedding.indptr"].numel() - 1),
                                       start["embedding.indptr"].diff())
        mask = torch.zeros_like(margin, dtype=torch.bool)
        mask[rows, start["embedding.dims"].long()] = True
        assert torch.equal(mask, topk_mask(margin, result.budget.kept))
