"""How the artifact stores kept values: one precision for every feature, or one per frequency block.

Feature ids are frequency-ordered, so the search's L blocks are id ranges (``block_starts``) and a precision per
block (most frequent first) is a precision per id range: the artifact stores one *segment* per run of equal
neighbouring precisions, each quantised on its own (:mod:`autosrh_ray.engine.quantize`). Pure Python.
"""
from __future__ import annotations

from typing import Sequence, Union

from .quantize import PRECISIONS

Precision = Union[str, tuple[str, ...]]  # one precision, or one per frequency block (most frequent first)


def segments(precision: Precision, block_starts: Sequence[int], num_features: int) -> list[tuple[int, int, str]]:
    """(first feature, end feature, precision) of every stored segment, equal neighbouring blocks merged; one
    segment over every feature for a single precision."""
    if isinstance(precision, str):
        return [(0, num_features, precision)]
    if len(precision) != len(block_starts):
        raise ValueError(f"a precision per block: {len(block_starts)} blocks, {len(precision)} precisions")
    out: list[tuple[int, int, str]] = []
    ends = [*block_starts[1:], num_features]
    for first, end, p in zip(block_starts, ends, precision):
        if p not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {p!r})")
        if out and out[-1][2] == p:
            out[-1] = (out[-1][0], end, p)
        else:
            out.append((first, end, p))
    return out


def precision_name(precision: Precision) -> str:
    """``fp16`` for one precision; per block, run-length: ``int8x2-fp16x4`` (path-safe)."""
    if isinstance(precision, str):
        return precision
    runs: list[list] = []
    for p in precision:
        if runs and runs[-1][0] == p:
            runs[-1][1] += 1
        else:
            runs.append([p, 1])
    return "-".join(p if n == 1 else f"{p}x{n}" for p, n in runs)


def reported(precision: Precision) -> Union[str, list[str]]:
    """As ``report.json`` gives it: a string, or a list per block."""
    return precision if isinstance(precision, str) else list(precision)
