"""Criteo-profile generator: Criteo Kaggle's shape and per-field cardinalities at any row count, with planted
signal, written as dac text (label, I1–I13, C1–C26, tab-separated, empty = missing). Ray-free; numpy only.

**Cardinalities.** The target is the distinct-value count of each categorical field over Criteo Kaggle's
45,840,617 training rows (DLRM's Kaggle preprocessing counts, :data:`TARGET_DISTINCT`). Field ``f`` draws a
0-based rank ``r`` from a truncated discrete Pareto (Zipf-like) law on ``V_f`` values::

    P(r = k - 1) = (k^(1-s) - (k+1)^(1-s)) / (1 - (V+1)^(1-s)),   k = 1 … V      (s = 1: ln(1+1/k) / ln(V+1))

i.e. ``r = floor(x) - 1`` for ``x`` from the density ∝ x^(-s) on [1, V+1), sampled by its analytic inverse CDF
``x = (1 - u·(1 - (V+1)^(1-s)))^(1/(1-s))``. The value written is an 8-hex-digit token, a bijective 32-bit hash
of (field, rank), so a token says nothing about its frequency and nothing per value is stored: memory does not
grow with V (10^8 values for C3) or with the row count. The expected distinct count after N rows is
``E[D_f(N)] = Σ_k 1 - (1 - p_k)^N`` (:func:`expected_distinct`: exact sum over the first 65,536 ranks, Simpson's
rule on a log grid beyond; it matches the full sum to < 1e-9 relative at V = 10^6).

**Calibration** (:func:`calibrate`, ``python -m autosrh_ray.data.criteo_profile --calibrate``; the result is
:data:`PROFILE`). Fields with fewer than 1,000 values at 45.84M rows use their whole vocabulary
(``V_f`` = target, ``s_f`` = 1: every value is seen long before 45M rows). Every larger field gets a vocabulary
ten times its target (``V_f`` = 10 · target: at 45.84M rows a tenth of it has been seen, so distinct counts keep
growing with N as on real data), and ``s_f`` is the root of ``E[D_f(45,840,617)] = target`` (bisection; E[D] falls
as s grows). With the ratio 10 a ``min_count: 10`` threshold keeps about 1.13M values at 45.84M rows (ratio 4:
1.37M, ratio 2: 1.79M), Criteo's order (AutoInt's preprocessing of the same rows with threshold 10 reports
998,960 features, numerical buckets included). Every E[D] at 45.84M is within 0.0003% of its target (E[kept ≥ 10]
by the Poisson approximation; :func:`calibration_table` prints this table):

=====  ==========  ===========  ========  ==========  ==========  =========  ==========
field      target          V_f       s_f        E[D]     E[kept]       E[D]        E[D]
           45.84M                             45.84M  ≥10 45.84M         2M        200k
=====  ==========  ===========  ========  ==========  ==========  =========  ==========
C1          1,460       14,600  2.618184       1,460         431        443         183
C2            583          583  1.000000         583         583        583         583
C3     10,131,227  101,312,270  1.002927  10,131,210     273,572    776,147     102,457
C4      2,202,608   22,026,080  1.188186   2,202,606     111,291    213,282      34,524
C5            305          305  1.000000         305         305        305         305
C6             24           24  1.000000          24          24         24          24
C7         12,517      125,170  1.982544      12,517       2,360      2,651         833
C8            633          633  1.000000         633         633        633         633
C9              3            3  1.000000           3           3          3           3
C10        93,145      931,450  1.601206      93,145      11,093     14,326       3,471
C11         5,683       56,830  2.179521       5,683       1,270      1,372         477
C12     8,351,593   83,515,930  1.029268   8,351,592     250,070    661,440      89,797
C13         3,194       31,940  2.347421       3,194         805        849         318
C14            27           27  1.000000          27          27         27          27
C15        14,992      149,920  1.942009      14,992       2,717      3,083         947
C16     5,461,306   54,613,060  1.082660   5,461,312     198,450    462,868      66,618
C17            10           10  1.000000          10          10         10          10
C18         5,652       56,520  2.181010       5,652       1,265      1,365         476
C19         2,173       21,730  2.473710       2,173         593        616         243
C20             4            4  1.000000           4           4          4           4
C21     7,046,547   70,465,470  1.051219   7,046,562     229,033    573,833      79,780
C22            18           18  1.000000          18          18         18          18
C23            15           15  1.000000          15          15         15          15
C24       286,181    2,861,810  1.437322     286,181      25,805     37,161       7,792
C25           105          105  1.000000         105         105        105         105
C26       142,572    1,425,720  1.535893     142,572      15,313     20,547       4,712
all    33,762,577                         33,762,579   1,125,796  2,771,709     394,356
=====  ==========  ===========  ========  ==========  ==========  =========  ==========

**Label and signal.** ``logit = offset + Σ_f b_f[r_f] + Σ_{f<g} <v_f[r_f], v_g[r_g]> + Σ_i w_i z_i``: the
informative categorical fields (:data:`SIGNAL_FIELDS`, from 10 to 10^8 values) carry a bias and a 4-dim latent
vector for their :data:`SIGNAL_VALUES` most frequent ranks only (tables of 1,000 × 5 numbers per field; rarer
values are noise), interacting pairwise as in an FM; the other 19 categorical fields are pure noise. Numerical
fields are non-negative integer counts ``floor(lognormal(μ_i, σ_i))`` with Criteo-like missing rates (I12 77%
missing, I1 and I10 45%, …); :data:`SIGNAL_NUMERICAL` add ``w_i · (log1p(x) - μ_i) / σ_i`` (0 when missing). The
offset is solved at construction on a fixed 65,536-row sample so that ~25% of labels are positive.

Rows come in fixed blocks of :data:`BLOCK_ROWS`, each from its own seeded streams (one per quantity, filled row by
row, so a block's first rows can be drawn alone), so any row range is reproducible on its own and shards can be
written in parallel with identical concatenated output for any shard count. One core writes about 280k rows/s of
plain text (~266 bytes a row) and 180k rows/s gzipped (~95 bytes a row) in under 200 MiB
(``benchmarks/criteo_profile.py``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .synthetic import SyntheticTruth

BLOCK_ROWS = 65_536
KAGGLE_ROWS = 45_840_617  # Criteo Kaggle train.txt (7 days), where TARGET_DISTINCT was counted
NUMERICAL = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = ("label", *NUMERICAL, *CATEGORICAL)
# Distinct values per field over Criteo Kaggle (DLRM's preprocessing counts), C1 … C26.
TARGET_DISTINCT = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
                   5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
VOCAB_RATIO = 10  # fields with >= FULL_VOCAB_BELOW values draw from VOCAB_RATIO × their 45.84M distinct count
FULL_VOCAB_BELOW = 1000
# (V_f, s_f) per field, C1 … C26: found by calibrate() (V_f fixed by the rule above, s_f by bisection on
# E[D_f(KAGGLE_ROWS)] = target to 1e-12, rounded to 6 decimals: every E[D] is within 0.001% of its target).
PROFILE = (
    (14600, 2.618184), (583, 1.0), (101312270, 1.002927), (22026080, 1.188186), (305, 1.0), (24, 1.0),
    (125170, 1.982544), (633, 1.0), (3, 1.0), (931450, 1.601206), (56830, 2.179521), (83515930, 1.029268),
    (31940, 2.347421), (27, 1.0), (149920, 1.942009), (54613060, 1.08266), (10, 1.0), (56520, 2.18101),
    (21730, 2.47371), (4, 1.0), (70465470, 1.051219), (18, 1.0), (15, 1.0), (2861810, 1.437322), (105, 1.0),
    (1425720, 1.535893),
)
# Informative fields: a field with a steep head (C1), three small ones, a mid-size one and a 10^8-value one.
SIGNAL_FIELDS = ("C1", "C2", "C3", "C6", "C10", "C14", "C17")
SIGNAL_VALUES = 1000  # the most frequent ranks of a signal field that carry signal
LATENT_DIM = 4
SIGNAL_NUMERICAL = ("I1", "I3", "I5", "I6", "I9", "I11")
POSITIVE_RATE = 0.25
# Numerical fields: floor(lognormal(mu, sigma)) and the share missing, I1 … I13 (Criteo-like medians and rates).
NUMERIC_MU = (0.3, 1.3, 1.9, 1.5, 7.9, 3.5, 1.2, 2.1, 3.6, -0.7, 0.3, -1.0, 1.4)
NUMERIC_SIGMA = (1.2, 2.0, 1.3, 1.0, 1.8, 1.5, 1.4, 0.8, 1.2, 0.8, 1.0, 1.3, 0.9)
NUMERIC_MISSING = (0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0005, 0.04, 0.45, 0.04, 0.77, 0.22)
NUMERIC_MAX = 999_999_999  # nine digits at most
_TAG = 0xC1E0  # stream namespace, apart from the synthetic generator's
_EXACT_RANKS = 1 << 16
_GRID = 4001


# ---------------------------------------------------------------------------------------------------- the law
def rank_probabilities(k: np.ndarray, vocab: int, s: float) -> np.ndarray:
    """P(rank = k - 1) for 1-based ``k`` (float arrays allowed, for the tail integral)."""
    k = np.asarray(k, dtype=np.float64)
    if s == 1.0:
        return np.log1p(1.0 / k) / math.log(vocab + 1.0)
    a = 1.0 - s
    z = -math.expm1(a * math.log(vocab + 1.0))  # 1 - (V+1)^a
    return -np.exp(a * np.log(k)) * np.expm1(a * np.log1p(1.0 / k)) / z  # (k^a - (k+1)^a) / z


def _sum_over_ranks(fn, vocab: int, s: float) -> float:
    """Σ_{k=1..V} fn(p_k): exact for the first 65,536 ranks, Simpson's rule in log k beyond (smooth there)."""
    head = min(vocab, _EXACT_RANKS)
    total = float(np.sum(fn(rank_probabilities(np.arange(1, head + 1), vocab, s))))
    if vocab > head:
        t = np.linspace(math.log(head + 0.5), math.log(vocab + 0.5), _GRID)
        k = np.exp(t)
        g = fn(rank_probabilities(k, vocab, s)) * k
        total += (t[1] - t[0]) / 3 * (g[0] + g[-1] + 4 * g[1:-1:2].sum() + 2 * g[2:-1:2].sum())
    return total


def field_expected_distinct(rows: int, vocab: int, s: float) -> float:
    """E[distinct values] of one field after ``rows`` rows: Σ_k 1 - (1 - p_k)^rows."""
    return _sum_over_ranks(lambda p: -np.expm1(rows * np.log1p(-p)), vocab, s)


def field_expected_kept(rows: int, vocab: int, s: float, min_count: int) -> float:
    """E[values seen at least ``min_count`` times] of one field after ``rows`` rows (Poisson approximation)."""
    def at_least(p: np.ndarray) -> np.ndarray:
        lam = rows * p
        term = np.exp(-lam)
        below = term.copy()
        for j in range(1, min_count):
            term = term * lam / j
            below += term
        return 1.0 - below

    return _sum_over_ranks(at_least, vocab, s)


def expected_distinct(rows: int, profile: Sequence[tuple[int, float]] = PROFILE) -> np.ndarray:
    """Expected distinct values per categorical field (C1 … C26) after ``rows`` generated rows."""
    return np.array([field_expected_distinct(rows, v, s) for v, s in profile])


def expected_kept(rows: int, min_count: int, profile: Sequence[tuple[int, float]] = PROFILE) -> np.ndarray:
    """Expected values per field seen at least ``min_count`` times after ``rows`` rows (what ``dataset.min_count``
    keeps when all rows are counted)."""
    return np.array([field_expected_kept(rows, v, s, min_count) for v, s in profile])


def calibrate(rows: int = KAGGLE_ROWS, targets: Sequence[int] = TARGET_DISTINCT, ratio: int = VOCAB_RATIO,
              full_below: int = FULL_VOCAB_BELOW) -> tuple[tuple[int, float], ...]:
    """(V_f, s_f) per field: V_f = target below ``full_below`` (s_f = 1), else ``ratio`` · target with s_f the root
    of E[D_f(rows)] = target by bisection. How :data:`PROFILE` was found (about 30 s)."""
    out = []
    for target in targets:
        if target < full_below:
            out.append((int(target), 1.0))
            continue
        vocab = int(ratio * target)
        lo, hi = 0.5, 4.0
        while hi - lo > 1e-12:
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if field_expected_distinct(rows, vocab, mid) > target else (lo, mid)
        out.append((vocab, round((lo + hi) / 2, 6)))
    return tuple(out)


# ---------------------------------------------------------------------------------------------- the generator
def _mix32(x: np.ndarray) -> np.ndarray:
    """A bijection of uint32 (Wellons' lowbias32)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_PAIRS = np.stack([_HEX[np.arange(256) >> 4], _HEX[np.arange(256) & 15]], axis=1).copy().view(np.uint16).ravel()
_POW10 = (10 ** np.arange(1, 10)).astype(np.uint32)


class CriteoProfile:
    """Deterministic generator of Criteo-profile rows: ``text(start, stop)`` is rows [start, stop) as dac lines,
    the same bytes whichever ranges they are generated in."""

    def __init__(self, seed: int = 0, profile: Sequence[tuple[int, float]] = PROFILE):
        self.seed = int(seed)
        self.vocab = np.array([v for v, _ in profile], dtype=np.int64)
        if self.vocab.max() > 2**32:
            raise ValueError("a field's vocabulary must fit 32-bit tokens (<= 2^32 values)")
        s = np.array([e for _, e in profile], dtype=np.float64)
        self._log = s == 1.0
        self._a = np.where(self._log, 1.0, 1.0 - s)
        self._z = np.where(self._log, np.log(self.vocab + 1.0), -np.expm1(self._a * np.log(self.vocab + 1.0)))
        rng = np.random.default_rng([self.seed, _TAG, 0])
        self._salt = rng.integers(0, 2**32, size=len(CATEGORICAL), dtype=np.uint64).astype(np.uint32)
        self._sig = np.array([CATEGORICAL.index(f) for f in SIGNAL_FIELDS])
        self._sig_k = np.minimum(self.vocab[self._sig], SIGNAL_VALUES)
        pairs = max(1, len(SIGNAL_FIELDS) * (len(SIGNAL_FIELDS) - 1) // 2)
        sigma = (1.5 / (pairs * LATENT_DIM)) ** 0.25  # pairwise interaction variance ~1.5 on frequent values
        # one zero row past the top ranks: ranks >= SIGNAL_VALUES index it
        self._bias = np.zeros((len(SIGNAL_FIELDS), SIGNAL_VALUES + 1))
        self._latent = np.zeros((len(SIGNAL_FIELDS), SIGNAL_VALUES + 1, LATENT_DIM))
        for j, k in enumerate(self._sig_k):
            self._bias[j, :k] = rng.normal(0.0, 0.5, size=k)
            self._latent[j, :k] = rng.normal(0.0, sigma, size=(k, LATENT_DIM))
        self._num_sig = np.array([NUMERICAL.index(f) for f in SIGNAL_NUMERICAL])
        self._num_coef = rng.choice([-0.5, 0.5], size=len(SIGNAL_NUMERICAL))
        self._mu, self._sigma = np.array(NUMERIC_MU), np.array(NUMERIC_SIGMA)
        self._missing = np.array(NUMERIC_MISSING)
        self.offset = 0.0
        self.offset = self._solve_offset()
        self.truth = SyntheticTruth(
            signal_fields=SIGNAL_FIELDS,
            noise_fields=tuple(f for f in CATEGORICAL if f not in SIGNAL_FIELDS),
            signal_numerical=SIGNAL_NUMERICAL,
            noise_numerical=tuple(f for f in NUMERICAL if f not in SIGNAL_NUMERICAL),
            signal_values=SIGNAL_VALUES,
        )

    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS

    def _draw(self, key: list[int], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(0-based ranks (n, 26), numbers (n, 13) int64, missing (n, 13)): each from its own stream of ``key``,
        filled row by row, so n rows are the first n rows of any longer draw."""
        u = np.random.default_rng([*key, 0]).random((n, len(CATEGORICAL)))
        x = np.empty_like(u)
        log, power = self._log, ~self._log  # x = (V+1)^u for s = 1, (1 - u z)^(1/(1-s)) otherwise
        x[:, log] = np.exp(u[:, log] * self._z[log])
        x[:, power] = np.exp(np.log1p(-u[:, power] * self._z[power]) / self._a[power])
        ranks = np.minimum(x.astype(np.int64), self.vocab) - 1
        raw = np.random.default_rng([*key, 1]).lognormal(self._mu, self._sigma, size=(n, len(NUMERICAL)))
        numbers = np.minimum(np.floor(raw), NUMERIC_MAX).astype(np.int64)
        missing = np.random.default_rng([*key, 2]).random((n, len(NUMERICAL))) < self._missing
        return ranks, numbers, missing

    def _logit(self, ranks: np.ndarray, numbers: np.ndarray, missing: np.ndarray) -> np.ndarray:
        idx = np.minimum(ranks[:, self._sig], SIGNAL_VALUES)  # (n, s); ranks past the top share the zero row
        fields = np.arange(len(SIGNAL_FIELDS))
        lat = self._latent[fields, idx]  # (n, s, d)
        summed = lat.sum(axis=1)
        logit = self.offset + self._bias[fields, idx].sum(axis=1)
        logit += 0.5 * ((summed ** 2).sum(-1) - (lat ** 2).sum(axis=(1, 2)))
        j = self._num_sig
        z = (np.log1p(numbers[:, j]) - self._mu[j]) / self._sigma[j]
        logit += np.where(missing[:, j], 0.0, z) @ self._num_coef
        return logit

    def _solve_offset(self) -> float:
        """The offset giving a POSITIVE_RATE mean probability on a fixed sample of BLOCK_ROWS rows."""
        ranks, numbers, missing = self._draw([self.seed, _TAG, 2], BLOCK_ROWS)
        base = self._logit(ranks, numbers, missing)
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.mean(1.0 / (1.0 + np.exp(-(base + mid)))) < POSITIVE_RATE else (lo, mid)
        return (lo + hi) / 2

    def block(self, b: int, rows: int = BLOCK_ROWS) -> dict[str, np.ndarray]:
        """The first ``rows`` rows of block ``b`` (rows b·BLOCK_ROWS …): ``label`` (n,), ``ranks`` (n, 26)
        0-based, ``numbers`` (n, 13) int64 and ``missing`` (n, 13) bool; the same rows whatever ``rows``."""
        key = [self.seed, _TAG, 1, b]
        ranks, numbers, missing = self._draw(key, rows)
        logit = self._logit(ranks, numbers, missing)
        label = (np.random.default_rng([*key, 3]).random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.uint8)
        return {"label": label, "ranks": ranks, "numbers": numbers, "missing": missing}

    def logit(self, block: dict[str, np.ndarray]) -> np.ndarray:
        """The planted logit of a block's rows (label = Bernoulli(sigmoid(logit)))."""
        return self._logit(block["ranks"], block["numbers"], block["missing"])

    def tokens(self, ranks: np.ndarray, fields: Optional[np.ndarray] = None) -> np.ndarray:
        """uint32 token per (row, field) rank: a bijection of the rank for each field (the 8 hex digits written)."""
        fields = np.arange(ranks.shape[-1]) if fields is None else fields
        return _mix32(ranks.astype(np.uint32) + self._salt[fields])

    def blocks(self, start: int, stop: int):
        """(row offset, block dict sliced to the rows of [start, stop)) for every block touching the range."""
        for b in range(start // BLOCK_ROWS, -(-stop // BLOCK_ROWS) if stop > start else start // BLOCK_ROWS):
            lo, hi = max(start - b * BLOCK_ROWS, 0), min(stop - b * BLOCK_ROWS, BLOCK_ROWS)
            block = self.block(b, hi)
            yield b * BLOCK_ROWS + lo, {k: v[lo:hi] for k, v in block.items()}

    def text(self, start: int, stop: int) -> bytes:
        """Rows [start, stop) as Criteo dac lines."""
        return b"".join(self.lines(block) for _, block in self.blocks(start, stop))

    def lines(self, block: dict[str, np.ndarray]) -> bytes:
        """A block's rows as dac lines."""
        return self.line_bytes(block).tobytes()

    def line_bytes(self, block: dict[str, np.ndarray]) -> np.ndarray:
        """A block's rows as dac lines in a uint8 array, assembled in a fixed-width byte matrix (numbers
        right-aligned in slots as wide as the block's widest value of the field) whose unused digit slots are
        then dropped."""
        label, missing = block["label"], block["missing"]
        n = len(label)
        if n == 0:
            return np.zeros(0, dtype=np.uint8)
        values = np.where(missing, 0, block["numbers"]).astype(np.uint32)
        digits = np.where(missing, 0, np.searchsorted(_POW10, values, side="right") + 1)
        widths = digits.max(axis=0)
        n_cat = len(CATEGORICAL)
        width = 1 + int((1 + widths).sum()) + 9 * n_cat + 1
        buf = np.empty((n, width), dtype=np.uint8)
        keep = np.ones((n, width), dtype=bool)
        buf[:, 0] = label + 48
        pos = 1
        for i in range(values.shape[1]):
            buf[:, pos] = 9
            pos += 1
            w = int(widths[i])
            x = values[:, i]
            for j in range(w - 1, -1, -1):
                q = x // 10
                buf[:, pos + j] = (x - q * 10) + 48
                x = q
            keep[:, pos:pos + w] = np.arange(w) >= (w - digits[:, i])[:, None]
            pos += w
        cat = buf[:, pos:pos + 9 * n_cat].reshape(n, n_cat, 9)
        cat[:, :, 0] = 9
        big_endian = self.tokens(block["ranks"]).astype(">u4").view(np.uint8).reshape(n, n_cat, 4)
        cat[:, :, 1:] = _HEX_PAIRS[big_endian].view(np.uint8).reshape(n, n_cat, 8)
        buf[:, -1] = 10
        return buf[keep]


def calibration_table() -> str:
    """The module docstring's table: per field target, (V_f, s_f), expected distinct counts at 45.84M, 2M and
    200k rows, expected values kept by ``min_count: 10`` at 45.84M."""
    e45, e2m, e200k = (expected_distinct(n) for n in (KAGGLE_ROWS, 2_000_000, 200_000))
    kept = expected_kept(KAGGLE_ROWS, 10)
    widths = (5, 10, 11, 8, 10, 10, 9, 10)

    def row(values) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    rule = "  ".join("=" * w for w in widths)
    lines = [rule, row(["field", "target", "V_f", "s_f", "E[D]", "E[kept]", "E[D]", "E[D]"]),
             row(["", "45.84M", "", "", "45.84M", "≥10 45.84M", "2M", "200k"]), rule]
    for f, (target, (vocab, s)) in enumerate(zip(TARGET_DISTINCT, PROFILE)):
        lines.append(row([CATEGORICAL[f], f"{target:,}", f"{vocab:,}", f"{s:.6f}", f"{e45[f]:,.0f}",
                          f"{kept[f]:,.0f}", f"{e2m[f]:,.0f}", f"{e200k[f]:,.0f}"]))
    lines.append(row(["all", f"{sum(TARGET_DISTINCT):,}", "", "", f"{e45.sum():,.0f}", f"{kept.sum():,.0f}",
                      f"{e2m.sum():,.0f}", f"{e200k.sum():,.0f}"]))
    return "\n".join(lines + [rule])


if __name__ == "__main__":
    import sys

    if "--calibrate" in sys.argv:
        print(calibrate())
    print(calibration_table())
