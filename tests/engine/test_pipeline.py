"""The stage graph's options past the paper: rewinding before retraining, α fitted on a hashed slice of train,
and the warning when a stage stops at its cap; in-process runs repeat exactly for one ``train.seed``."""
import numpy as np
import torch

from autosrh_ray.data.prepared import EncodedSplit
from autosrh_ray.data.split import in_alpha_slice
from autosrh_ray.data.streaming import AlphaSlice, AssembleRows
from autosrh_ray.engine.model_state import cpu_state
from autosrh_ray.engine.training import FitResult
from autosrh_ray.methods.graph import cap_warning, rewound

from .helpers import pruned_model, tiny_model


def test_rewound_restarts_kept_entries_from_their_initial_values_with_alpha_ones():
    model = tiny_model("deepfm", dtype=torch.float32)
    initial = cpu_state(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # "trained"
    pruned = cpu_state(pruned_model(model, cr=4))
    out = rewound(pruned, initial)
    rows = torch.repeat_interleave(torch.arange(30), pruned["embedding.indptr"].diff())
    kept_initial = initial["embedding.embedding.weight"][rows, pruned["embedding.dims"].long()]
    assert torch.equal(out["embedding.kept.weight"].view(-1), kept_initial)
    assert not torch.equal(pruned["embedding.kept.weight"].view(-1), kept_initial)
    assert torch.equal(out["embedding.alpha"], torch.ones_like(pruned["embedding.alpha"]))
    for key in pruned:  # θ, the first-order term and the kept positions keep their searched values
        if key not in ("embedding.kept.weight", "embedding.alpha"):
            assert torch.equal(out[key], pruned[key]), key


def test_alpha_slice_is_a_content_hash_with_the_requested_share_and_seeded():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 10_000, size=(20_000, 5))
    inside = in_alpha_slice(ids, 0.1, seed=1)
    assert abs(inside.mean() - 0.1) < 0.01
    assert np.array_equal(in_alpha_slice(ids[::-1], 0.1, 1), inside[::-1])  # order does not matter
    assert not np.array_equal(in_alpha_slice(ids, 0.1, 2), inside)  # the seed does
    assert np.array_equal(in_alpha_slice(np.vstack([ids[:1], ids[:1]]), 0.5, 1)[0:1],
                          in_alpha_slice(ids[:1], 0.5, 1))  # same row, same side


def test_ray_data_assembly_keeps_the_same_alpha_slice_as_the_engine():
    rng = np.random.default_rng(1)
    n, f = 5000, 3
    ids, values = rng.integers(0, 500, size=(n, f)), rng.random((n, f)).astype(np.float32)
    labels = rng.integers(0, 2, n).astype(np.float32)
    columns = {**{f"id{i}": ids[:, i] for i in range(f)}, **{f"value{i}": values[:, i] for i in range(f)},
               "label": labels}
    inside = in_alpha_slice(ids, 0.2, 7)
    for side in (True, False):
        out = AssembleRows(f, shuffle=False, rows=AlphaSlice(0.2, 7, side))(columns)
        assert np.array_equal(out["ids"], ids[inside == side])
        assert np.array_equal(out["label"], labels[inside == side])
    shuffled = AssembleRows(f, shuffle=True, rows=AlphaSlice(0.2, 7, True))(columns)
    assert sorted(map(tuple, shuffled["ids"])) == sorted(map(tuple, ids[inside]))


def test_in_process_search_takes_theta_and_alpha_batches_from_disjoint_parts_of_train():
    from autosrh_ray.config import load_config
    from autosrh_ray.methods.in_process import InProcessExecutor

    rng = np.random.default_rng(2)
    train = EncodedSplit(rng.integers(0, 300, size=(4000, 3)), np.ones((4000, 3), np.float32),
                         rng.integers(0, 2, 4000).astype(np.float32))
    valid = EncodedSplit(train.ids[:500] + 1000, train.values[:500], train.labels[:500])
    config = load_config(overrides=["search.alpha_data=train", "search.alpha_fraction=0.25", "train.batch_size=100"])
    ex = InProcessExecutor(config, prepared=None, train=train, valid=valid, log=lambda _: None)
    theta_rows = {tuple(r) for b in ex.search_batches(0) for r in b.ids.tolist()}
    alpha_rows = {tuple(r) for b in ex.alpha_batches(0) for r in b.ids.tolist()}
    all_rows = {tuple(r) for r in train.ids.tolist()}
    assert not theta_rows & alpha_rows
    assert theta_rows | alpha_rows == all_rows
    assert 0.2 < len(alpha_rows) / len(all_rows) < 0.3
    assert {tuple(r) for b in ex.train_batches(0) for r in b.ids.tolist()} == all_rows  # retraining: all of train


def test_cap_warning_names_the_key_to_raise():
    assert cap_warning("retrain", FitResult(epochs=5, best_epoch=4, stop_reason="patience")) is None
    text = cap_warning("search", FitResult(epochs=5, best_epoch=4, stop_reason="max_epochs"))
    assert "search.max_epochs" in text and "raise" in text
    assert "train.max_epochs" in cap_warning("uniform", FitResult(epochs=5, stop_reason="max_epochs"))


def test_in_process_runs_repeat_exactly_for_one_seed_and_differ_for_another(tmp_path):
    """Every batch order of the in-process loops (Θ's, α's, the retrain's shuffles) comes from ``train.seed``."""
    from autosrh_ray.config import load_config, with_overrides
    from autosrh_ray.data.local import prepare_synthetic
    from autosrh_ray.methods.in_process import run_all_in_process

    config = load_config(overrides=["dataset.synthetic.rows=3000", "model.name=fm", "search.K=8", "search.L=3",
                                    "train.batch_size=128", "search.max_epochs=2", "train.max_epochs=2"])
    prepared = prepare_synthetic(config, tmp_path)
    train, valid = prepared.load_split("train"), prepared.load_split("valid")

    def histories(seed: int) -> dict:
        result = run_all_in_process(with_overrides(config, {"train.seed": seed}), prepared, train, valid,
                                log=lambda _: None)[0]
        return {stage: [{k: v for k, v in h.items() if not k.endswith("_seconds")} for h in fit.history]
                for stage, fit in result.stages.items()}

    first = histories(3)
    assert set(first) == {"search", "retrain"} and all(len(h) == 2 for h in first.values())
    assert histories(3) == first
    assert histories(4) != first
