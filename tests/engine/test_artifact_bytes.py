"""The artifact counts its own bytes: the kept-row bitmap, the cheaper of the two indexes, values at their precision
— counted from the tensors in the file, the file's size within 5 % of them (plus torch's framing), and a model
loaded at each precision reading its values back within the quantisation bound."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autosrh_ray.artifact.budget import embedding_bytes
from autosrh_ray.artifact.format import (_kept_layout, compact_embedding, embedding_bytes_of, load_model, save_model,
                                         tensor_bytes)

from .helpers import pruned_model, random_batch, tiny_model


def kept_entries(counts: list[int], dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """counts per feature, ascending dims per feature (random), values."""
    g = torch.Generator().manual_seed(seed)
    dims = [torch.sort(torch.randperm(dim, generator=g)[:c]).values for c in counts]
    nnz = sum(counts)
    return (torch.tensor(counts), torch.cat(dims).to(torch.uint8) if dims else torch.zeros(0, dtype=torch.uint8),
            torch.randn(nnz, generator=g))


@pytest.mark.parametrize("counts, dim, index", [
    ([0, 3, 1, 0, 0, 2, 1] * 50, 64, "dims"),  # few dims per kept row: a byte per entry beats 8 bytes per row
    ([0, 40, 64, 12, 0, 9] * 50, 64, "mask"),  # many: the 64-bit mask per row is cheaper
])
def test_the_cheaper_index_is_chosen_and_reads_back_exactly(counts, dim, index):
    c, dims, values = kept_entries(counts, dim)
    section = compact_embedding(c, dims, values, dim)
    rows, nnz = sum(1 for n in counts if n), sum(counts)
    assert section["index"] == index
    index_bytes = {"dims": rows + nnz, "mask": rows * math.ceil(dim / 8)}  # counts + dims, or one mask per row
    assert index_bytes[index] == min(index_bytes.values())
    assert tensor_bytes(section) == math.ceil(len(counts) / 8) + index_bytes[index] + 4 * nnz  # bitmap, index, fp32
    got_counts, _, got_dims = _kept_layout(section)
    assert torch.equal(got_counts, c) and torch.equal(got_dims, dims)


@pytest.mark.parametrize("counts, kept_rows_by", [
    ([2, 0, 1] + [0] * 997, "bitmap"),  # a bitmap up to the last kept feature: 1 byte (not 125), ids: 8
    ([0] * 1000, "bitmap"),  # nothing kept: nothing stored
    ([0] * 9 + [1] + [0] * 990, "bitmap"),  # 2 bytes, ids: 4
    ([1] + [0] * 998 + [3], "ids"),  # the last feature kept: 125 bytes of bitmap, 8 of ids
    ([0, 1] * 500, "bitmap"),  # half the features: 125 bytes of bitmap, 2,000 of ids
])
def test_which_features_keep_anything_costs_the_cheaper_of_a_bitmap_to_the_last_and_the_ids(counts, kept_rows_by):
    c, dims, values = kept_entries(counts, 16)
    section = compact_embedding(c, dims, values, 16)
    span = max((i + 1 for i, n in enumerate(counts) if n), default=0)
    rows, nnz = sum(1 for n in counts if n), sum(counts)
    kept_rows_bytes = {"bitmap": math.ceil(span / 8), "ids": 4 * rows}
    assert kept_rows_bytes[kept_rows_by] == min(kept_rows_bytes.values())
    stored = section["rows"] if kept_rows_by == "bitmap" else section["row_ids"]
    assert stored.numel() * stored.element_size() == kept_rows_bytes[kept_rows_by]
    assert ("row_ids" in section) == (kept_rows_by == "ids")
    assert tensor_bytes(section) == min(kept_rows_bytes.values()) + min(rows + nnz, 2 * rows) + 4 * nnz
    assert embedding_bytes(nnz, rows, span, 16, "fp32") == tensor_bytes(section)  # what a byte budget counts
    got_counts, _, got_dims = _kept_layout(section)
    assert torch.equal(got_counts, c) and torch.equal(got_dims, dims)
    if kept_rows_by == "bitmap":  # format 4's bitmap over all M features reads the same
        full = dict(section, rows=torch.from_numpy(np.packbits(c.numpy() > 0, bitorder="little")))
        assert torch.equal(_kept_layout(full)[0], c)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "int4"])
def test_bytes_are_counted_from_the_file_and_the_loaded_model_reads_its_values_back(tmp_path, precision):
    model = pruned_model(tiny_model("deepfm", m=400, k=16, dtype=torch.float32), cr=5)
    path = tmp_path / "model.pt"
    stored = save_model(model, path, "deepfm", num_fields=3, options={"hidden": [8, 8], "dropout": 0.0}, precision=precision)
    payload = torch.load(path, weights_only=True)
    assert stored.embedding == tensor_bytes(payload["embedding"])
    assert stored.other == tensor_bytes([payload["first_order"], payload["backbone"]])
    assert embedding_bytes_of(model, precision) == stored.embedding
    assert stored.file == path.stat().st_size <= 1.05 * (stored.embedding + stored.other) + 64 * 1024
    loaded = load_model(path).embedding
    emb = model.embedding
    folded = emb.dense() * emb.alpha[emb.block_of]
    error = (loaded.dense() - folded).abs()
    if precision == "fp32":
        assert error.max() == 0
    elif precision == "fp16":
        assert (error <= folded.abs() * 2.0 ** -11).all()
    else:  # per kept row: at most half its scale
        rows = emb.kept_per_feature() > 0
        (segment,) = payload["embedding"]["segments"]
        scale = segment["scale"].float()
        kept = emb.dense() != 0
        assert (error[rows] <= torch.where(kept[rows], scale[:, None] / 2 + 1e-6, torch.zeros(1))).all()
    batch = random_batch(n=32, m=400, seed=3, dtype=torch.float32)
    with torch.no_grad():
        assert torch.isfinite(load_model(path)(batch.ids, batch.values)).all()


def test_lower_precision_is_fewer_bytes():
    model = pruned_model(tiny_model("fm", m=400, k=16, dtype=torch.float32), cr=2)
    emb = model.embedding
    sizes = [tensor_bytes(compact_embedding(emb.kept_per_feature(), emb.kept_dims(), emb.folded_values(), 16, p))
             for p in ("fp32", "fp16", "int8", "int4")]
    assert sizes == sorted(sizes, reverse=True) and sizes[3] < sizes[0] / 3


def test_a_precision_per_block_stores_each_run_of_blocks_on_its_own_and_reads_back_within_its_bound(tmp_path):
    """Blocks (id ranges, most frequent first) at fp32, fp32, int4, fp16, int8: four segments (the two fp32 blocks
    merged), each value read back exactly (fp32), within fp16's rounding, or within half its row's scale."""
    model = pruned_model(tiny_model("deepfm", m=500, k=16, blocks=5, dtype=torch.float32), cr=3)
    starts, plan = (0, 100, 200, 300, 400), ("fp32", "fp32", "int4", "fp16", "int8")
    path = tmp_path / "model.pt"
    stored = save_model(model, path, "deepfm", num_fields=3, options={"hidden": [8, 8], "dropout": 0.0}, precision=plan,
                        block_starts=starts)
    section = torch.load(path, weights_only=True)["embedding"]
    assert section["precision"] == list(plan)
    assert [(s["first"], s["precision"]) for s in section["segments"]] == [(0, "fp32"), (200, "int4"),
                                                                           (300, "fp16"), (400, "int8")]
    assert stored.embedding == tensor_bytes(section) == embedding_bytes_of(model, plan, starts)
    emb = model.embedding
    folded = emb.dense() * emb.alpha[emb.block_of]
    error = (load_model(path).embedding.dense() - folded).abs()
    kept = emb.dense() != 0
    assert error[:200].max() == 0
    assert (error[300:400] <= folded[300:400].abs() * 2.0 ** -11).all()
    for segment, lo, hi in ((section["segments"][1], 200, 300), (section["segments"][3], 400, 500)):
        rows = torch.nonzero(kept[lo:hi].any(1)).flatten() + lo
        bound = segment["scale"].float()[:, None] / 2 + 1e-6
        assert (error[rows] <= torch.where(kept[rows], bound, torch.zeros(1))).all()
        assert (error[lo:hi][~kept[lo:hi].any(1)] == 0).all()
    # each segment alone is what quantising its blocks' values on their own gives: the same bytes
    alone = [tensor_bytes(compact_embedding(emb.kept_per_feature()[lo:hi], emb.kept_dims()[emb.indptr[lo]:emb.indptr[hi]],
                                            emb.folded_values()[emb.indptr[lo]:emb.indptr[hi]], 16, p)["segments"])
             for lo, hi, p in ((0, 200, "fp32"), (200, 300, "int4"), (300, 400, "fp16"), (400, 500, "int8"))]
    assert tensor_bytes(section["segments"]) == sum(alone)


@pytest.mark.parametrize("precision, starts, int_scales", [
    ("int4", (0,), "row"), (("int8", "fp32", "int4", "fp16", "int8"), (0, 100, 200, 300, 400), "row"),
    ("int4", (0, 100, 200, 300, 400), "dim"), (("int8", "fp32", "int4", "fp16", "int8"), (0, 100, 200, 300, 400), "dim")])
def test_a_quantisation_aware_packed_model_predicts_as_its_stored_artifact(tmp_path, precision, starts, int_scales):
    """The retrain's forward under ``prune.quant_aware`` reads every kept value as the artifact stores it: its
    outputs equal those of the saved and reloaded model; the state carries the setting through a reload."""
    from autosrh_ray.engine.model_state import load_model_state
    from autosrh_ray.engine.packed import quantisation_aware

    model = pruned_model(tiny_model("deepfm", m=500, k=16, blocks=5, dtype=torch.float32), cr=3).eval()
    plain = pruned_model(tiny_model("deepfm", m=500, k=16, blocks=5, dtype=torch.float32), cr=3).eval()
    load_model_state(model, quantisation_aware(model.state_dict(), precision, starts, int_scales))
    segments = 1 if isinstance(precision, str) else len(starts)  # no two neighbouring blocks alike here
    assert model.embedding.quant_starts.tolist() == list(starts)[:segments]
    save_model(model, tmp_path / "m.pt", "deepfm", num_fields=3, options={"hidden": [8, 8], "dropout": 0.0}, precision=precision,
               block_starts=starts, int_scales=int_scales)
    batch = random_batch(n=64, m=500, seed=5, dtype=torch.float32)
    with torch.no_grad():
        aware, stored = model(batch.ids, batch.values), load_model(tmp_path / "m.pt")(batch.ids, batch.values)
        unaware = plain(batch.ids, batch.values)
    assert torch.allclose(aware, stored, atol=1e-6, rtol=0)
    assert not torch.allclose(unaware, stored, atol=1e-6, rtol=0)  # without it, the stored model differs


@pytest.mark.parametrize("precision, starts, value_bytes, int_scales", [
    ("int8", (0,), 1, "row"), ("int4", (0,), 0.5, "row"), ("fp16", (0,), 2, "row"),
    (("int8", "fp32", "int4", "fp16", "int8"), (0, 100, 200, 300, 400), None, "row"),
    ("int4", (0, 100, 200, 300, 400), 0.5, "dim"),
    (("int8", "fp32", "int4", "fp16", "int8"), (0, 100, 200, 300, 400), None, "dim")])
def test_the_loaded_model_scores_from_the_stored_codes_as_the_read_back_values_would(tmp_path, precision, starts,
                                                                                    value_bytes, int_scales):
    """A loaded artifact keeps its values as stored (int8: a byte each, int4: half, fp16: two — never a float32
    copy of the kept values) and scores as a model over those values read back in float32 (an independent
    reference: a packed embedding built from the dequantised values)."""
    from autosrh_ray.artifact.format import _kept_layout
    from autosrh_ray.engine.model import EmbeddingModel
    from autosrh_ray.engine.packed import PackedEmbedding
    from autosrh_ray.engine.quantize import QuantizedValues, dequantize

    model = pruned_model(tiny_model("deepfm", m=500, k=16, blocks=5, dtype=torch.float32), cr=3)
    path = tmp_path / "m.pt"
    save_model(model, path, "deepfm", num_fields=3, options={"hidden": [8, 8], "dropout": 0.0}, precision=precision,
               block_starts=starts, int_scales=int_scales)
    loaded = load_model(path)
    nnz = model.embedding.kept_count()
    held = {name: t for name, t in loaded.embedding.stored.named_buffers() if name.startswith("data")}
    if value_bytes is not None:
        (codes,) = held.values()
        assert codes.numel() * codes.element_size() == math.ceil(nnz * value_bytes)
    assert loaded.embedding.kept.weight.numel() == 0  # no float copy of the kept values
    # the reference: every segment dequantised whole, in a float32 packed embedding
    section = torch.load(path, weights_only=True)["embedding"]
    counts, indptr, dims = _kept_layout(section)
    ranks = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum((counts > 0).long(), 0)])
    firsts = [s["first"] for s in section["segments"]]
    parts = []
    feature = torch.repeat_interleave(torch.arange(500), counts)  # of every kept entry
    for seg, first, end in zip(section["segments"], firsts, [*firsts[1:], 500]):
        lo, hi = int(indptr[int(ranks[first])]), int(indptr[int(ranks[end])])
        local = indptr[int(ranks[first]):int(ranks[end]) + 1] - lo
        groups = None
        if seg.get("scales") == "dim":  # the segment's own blocks (of 100 ids each), then the dimension
            groups = (feature[lo:hi] // 100 - first // 100) * 16 + dims[lo:hi].long()
        parts.append(dequantize(QuantizedValues(seg["precision"], seg["values"], int(local[-1]), seg.get("scale"),
                                                seg.get("bias")), local, groups))
    assert ({s.get("scales") for s in section["segments"] if "scale" in s} == {"dim"}) == (int_scales == "dim")
    full = torch.zeros(501, dtype=torch.long)
    full[1:] = torch.cumsum(counts, 0)
    reference = EmbeddingModel(PackedEmbedding(full, dims, torch.cat(parts), 16, torch.zeros(500, dtype=torch.long)),
                               loaded.first_order, loaded.backbone).eval()
    batch = random_batch(n=64, m=500, seed=7, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(loaded(batch.ids, batch.values), reference(batch.ids, batch.values))


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_dim_scales_store_one_scale_per_block_and_dimension_and_read_back_within_half_of_it(tmp_path, precision):
    """``int_scales="dim"``: L·K fp16 scales and biases (and the L blocks' first ids) instead of one per kept row;
    the bytes counted from the file are the formula's, fewer than row-wise here, and every value reads back within
    half its block's and dimension's scale of the float64 folded value."""
    from autosrh_ray.artifact.budget import bitmap_span

    model = pruned_model(tiny_model("deepfm", m=500, k=16, blocks=5, dtype=torch.float32), cr=3)
    starts, path = (0, 100, 200, 300, 400), tmp_path / "model.pt"
    stored = save_model(model, path, "deepfm", num_fields=3, options={"hidden": [8, 8], "dropout": 0.0},
                        precision=precision, block_starts=starts, int_scales="dim")
    section = torch.load(path, weights_only=True)["embedding"]
    (segment,) = section["segments"]
    assert segment["scales"] == "dim" and segment["scale"].numel() == segment["bias"].numel() == 5 * 16
    assert section["block_starts"].tolist() == list(starts) and section["block_starts"].dtype == torch.int32
    emb = model.embedding
    counts, nnz = emb.kept_per_feature(), emb.kept_count()
    rows = int((counts > 0).sum())
    formula = embedding_bytes(nnz, rows, bitmap_span(counts), 16, precision, "dim", 5)
    assert stored.embedding == tensor_bytes(section) == formula == embedding_bytes_of(model, precision, starts, "dim")
    row_wise = embedding_bytes(nnz, rows, bitmap_span(counts), 16, precision)
    assert formula == row_wise - 4 * rows + 4 * 5 * 16 + 4 * 5 < row_wise
    folded = (emb.dense() * emb.alpha[emb.block_of]).double()
    read = load_model(path).embedding.dense().double()
    kept = emb.dense() != 0
    scale = segment["scale"].double().reshape(5, 16)
    bias = segment["bias"].double().reshape(5, 16)
    levels = 256 if precision == "int8" else 16
    for b in range(5):
        block = slice(100 * b, 100 * (b + 1))
        for d in range(16):
            here = kept[block, d]
            if not here.any():
                continue
            x = folded[block, d][here]
            assert bias[b, d] <= x.min() and bias[b, d] + (levels - 1) * scale[b, d] >= x.max()
            assert (read[block, d][here] - x).abs().max() <= scale[b, d] / 2 + 1e-6
    assert (read[~kept] == 0).all()


def test_an_artifact_of_the_format_before_int_scales_still_loads(tmp_path):
    """Format 5 stored int8/int4 scales per kept row, as ``row`` does now, without a layout key: such a file loads
    and scores as the same model saved today."""
    model = pruned_model(tiny_model("deepfm", m=500, k=16, blocks=5, dtype=torch.float32), cr=3)
    save_model(model, tmp_path / "now.pt", "deepfm", num_fields=3, options={"hidden": [8, 8], "dropout": 0.0},
               precision="int8")
    payload = torch.load(tmp_path / "now.pt", weights_only=True)
    assert all("scales" not in s for s in payload["embedding"]["segments"])
    torch.save(dict(payload, format_version=5), tmp_path / "v5.pt")
    batch = random_batch(n=64, m=500, seed=9, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "v5.pt")(batch.ids, batch.values),
                           load_model(tmp_path / "now.pt")(batch.ids, batch.values))
