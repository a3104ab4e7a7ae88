"""The artifact's byte layout, stated once: every choice the writer (:mod:`.format`) makes about how an embedding
is stored, and what it costs. The budget estimator (:mod:`.budget`) counts with the same functions, so a budget
met on paper is met by the file (``tests/engine/test_artifact_bytes.py`` holds the two equal).

An embedding section stores:

* **which features keep anything** — a bitmap over the features up to the last that keeps anything (frequency-
  ordered ids: the rare tail a tight budget drops costs nothing), or the kept ids (int32), whichever is smaller;
* **which dimensions each kept row keeps** — a uint8 count per kept row and a uint8 dimension per entry, or a K-bit
  mask per kept row, whichever is smaller;
* **the values** at their precision (fp32 4 B, fp16 2 B, int8 1 B, int4 ½ B a value), one segment per run of equal
  precisions; int8 and int4 add an fp16 scale and bias (4 B) per kept row (``row`` scales), or per frequency block
  and dimension of the segment (``dim`` scales: 4·K B per block, whatever the rows) with the first feature id of
  every block (int32) once per table;
* **projections** (AutoDim, AutoEmb, MDE): the K×K fp32 matrices and the group of every feature — per feature
  (uint8 while the groups fit, else int32) or as runs of equal groups (a run's first id, int32, and its group),
  whichever is smaller.
"""
from __future__ import annotations

import math

import numpy as np
import torch

VALUE_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
ROW_BYTES = {"fp32": 0, "fp16": 0, "int8": 4, "int4": 4}  # fp16 scale and bias per kept row
SCALE_BYTES = 4  # an fp16 scale and bias (a row's, or a block's dimension's)
ID_BYTES = 4  # a kept id, a run's first id, a block's first id (int32)


def bitmap_span(counts: torch.Tensor | np.ndarray) -> int:
    """The features the bitmap covers for kept dims ``counts`` (M,): up to the last feature that keeps anything
    (features past it keep nothing and cost nothing), 0 when none does."""
    kept = np.flatnonzero(np.asarray(counts) > 0)
    return int(kept[-1]) + 1 if kept.size else 0


def rows_by_ids(rows: int, bitmap_features: int) -> bool:
    """Whether the kept rows are stored as their ids (fewer bytes than the bitmap)."""
    return ID_BYTES * rows < math.ceil(bitmap_features / 8)


def rows_bytes(rows: int, bitmap_features: int) -> int:
    """Bytes that say which features keep anything: the bitmap or the kept ids."""
    return min(math.ceil(bitmap_features / 8), ID_BYTES * rows)


def mask_bytes(dim: int) -> int:
    """Bytes of one kept row's K-bit mask."""
    return math.ceil(dim / 8)


def index_by_mask(rows: int, kept: int, dim: int) -> bool:
    """Whether the kept dimensions are stored as a mask per kept row (fewer bytes than counts and dims)."""
    return rows * mask_bytes(dim) < rows + kept


def index_bytes(rows: int, kept: int, dim: int) -> int:
    """Bytes that say which dimensions each kept row keeps: counts and dims, or masks."""
    return min(rows + kept, rows * mask_bytes(dim))


def values_bytes(kept: int, rows: int, precision: str, int_scales: str = "row", blocks: int = 1, dim: int = 0) -> int:
    """Bytes of one stored segment's values: ``kept`` entries in ``rows`` kept rows at ``precision``, with an
    integer precision's scales per row or (``int_scales="dim"``) per dimension of each of its ``blocks``."""
    scales = 0
    if ROW_BYTES[precision]:
        scales = SCALE_BYTES * (rows if int_scales == "row" else blocks * dim)
    return math.ceil(kept * VALUE_BITS[precision] / 8) + scales


def block_starts_bytes(int_scales: str, precisions, blocks: int) -> int:
    """Bytes of the blocks' first feature ids: stored once (``blocks`` int32) where ``dim`` scales are, i.e. where
    ``int_scales`` is ``dim`` and one of the segments' ``precisions`` is an integer one."""
    return ID_BYTES * blocks if int_scales == "dim" and any(ROW_BYTES[p] for p in precisions) else 0


def group_value_bytes(num_groups: int) -> int:
    """Bytes of one projection group number: uint8 while the groups fit, else int32."""
    return 1 if num_groups <= 256 else 4


def groups_by_runs(runs: int, num_features: int, value_bytes: int) -> bool:
    """Whether the projection groups are stored as runs of equal groups (fewer bytes than one per feature)."""
    return runs * (ID_BYTES + value_bytes) < num_features * value_bytes


def groups_bytes(runs: int, num_features: int, value_bytes: int) -> int:
    """Bytes of the projection groups: per feature or as runs."""
    return min(num_features * value_bytes, runs * (ID_BYTES + value_bytes))


def projection_bytes(num_groups: int, dim: int) -> int:
    """Bytes of the K×K fp32 projection matrices."""
    return num_groups * dim * dim * 4
