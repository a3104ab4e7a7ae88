"""Independent brute-force references for the data-layer tests (csv module and plain Python, no pyarrow/Ray)."""
from __future__ import annotations

import csv
import gzip
import math
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from autosrh_ray.config import load_config
from autosrh_ray.data.inputs import LINE_BITS
from autosrh_ray.data.split import split_of


def config(*overrides: str):
    return load_config(None, list(overrides))


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rt", newline="") as fh:
        return fh.read().splitlines()


def csv_rows(path: Path, delimiter: str, header: bool) -> tuple[Optional[list[str]], list[list[str]]]:
    lines = read_lines(path)
    rows = list(csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL))
    return (rows[0], rows[1:]) if header else (None, rows)


def bucket_token(text: str) -> str:
    """Criteo bucketize, written independently: '' missing, 'L<floor(ln(x)^2)>' for x > 2, '<int(x)>' otherwise."""
    if text == "":
        return ""
    x = float(text)
    return f"L{math.floor(math.log(x) ** 2)}" if x > 2 else str(int(x))


def criteo_fields(row: list[str]) -> list[str]:
    """Criteo field tokens in id-table order: I1..I13 bucketized, then C1..C26."""
    return [bucket_token(v) for v in row[1:14]] + row[14:40]


def brute_force_ids(field_names: Sequence[str], token_rows: list[list[str]], train: np.ndarray,
                    min_count: int) -> tuple[list[tuple[str, str, str, int]], list[dict[str, int]], list[int]]:
    """The global id order by a plain sort: [(field, value, kind, frequency)], per-field value→id, OOV ids."""
    counters = [Counter() for _ in field_names]
    for row, is_train in zip(token_rows, train):
        if is_train:
            for f, v in enumerate(row):
                counters[f][v] += 1
    keys = []
    for f, counter in enumerate(counters):
        oov = sum(c for c in counter.values() if c < min_count)
        keys += [(-c, f, v, 0) for v, c in counter.items() if c >= min_count]
        keys.append((-oov, f, "<OOV>", 1))
    keys.sort()
    table = [(field_names[f], v, "oov" if kind else "value", -neg) for neg, f, v, kind in keys]
    value_ids: list[dict[str, int]] = [{} for _ in field_names]
    oov_ids = [0] * len(field_names)
    for gid, (_, f, v, kind) in enumerate(keys):
        if kind:
            oov_ids[f] = gid
        else:
            value_ids[f][v] = gid
    return table, value_ids, oov_ids


def encode_rows(token_rows: list[list[str]], value_ids: list[dict[str, int]], oov_ids: list[int]) -> np.ndarray:
    return np.array([[value_ids[f].get(v, oov_ids[f]) for f, v in enumerate(row)] for row in token_rows],
                    dtype=np.int64).reshape(len(token_rows), len(oov_ids))


def splits(n: int, seed: int = 2026, fractions=(0.8, 0.1, 0.1), shards: int = 1) -> np.ndarray:
    """Split codes of ``n`` lines written by :func:`write_shards` into ``shards`` files: each row's position is
    (file index, line in the file)."""
    bounds = shard_bounds(n, shards)
    positions = np.concatenate([(i << LINE_BITS) + np.arange(bounds[i + 1] - bounds[i]) for i in range(shards)])
    return split_of(positions, seed, fractions)


def shard_bounds(n: int, shards: int) -> np.ndarray:
    return np.linspace(0, n, shards + 1).astype(int)


def write_shards(lines: list[str], directory: Path, shards: int, gzip_every: int = 0, header: str = "") -> list[Path]:
    """Split lines into ``shards`` files named so that sorting keeps input order (every k-th one gzipped)."""
    directory.mkdir(parents=True, exist_ok=True)
    bounds = shard_bounds(len(lines), shards)
    paths = []
    for i in range(shards):
        text = "".join(f"{x}\n" for x in ([header] if header else []) + lines[bounds[i]:bounds[i + 1]])
        if gzip_every and i % gzip_every == gzip_every - 1:
            path = directory / f"part-{i:03d}.txt.gz"
            path.write_bytes(gzip.compress(text.encode()))
        else:
            path = directory / f"part-{i:03d}.txt"
            path.write_text(text)
        paths.append(path)
    return paths
