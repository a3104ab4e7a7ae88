"""Criteo-like synthetic data with planted truth: the embedded default dataset (no download).

Categorical fields ``C1..Cc`` draw Zipf-distributed values; the first ``signal_fields`` of them carry signal
(a per-value bias and a latent vector; pairs of signal fields interact through dot products, as in an FM), but
only their ``signal_values`` most frequent values do: rarer values are noise. The other categorical fields are
pure noise. Numerical fields ``I1..In`` hold non-negative integer counts (about 10% missing); the first half of
them carry a linear signal on ``log1p(x)``. Labels are Bernoulli(sigmoid(logit)).

Rows are generated in fixed blocks of :data:`BLOCK_ROWS`, each from its own seeded stream, so any row range is
reproducible on its own (shard writers can generate ranges in parallel) and the data depends only on the config.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..config import SyntheticConfig

BLOCK_ROWS = 65_536
LABEL = "label"


@dataclass(frozen=True)
class SyntheticTruth:
    """What the generator planted: signal and noise fields, and how many values of a signal field carry signal."""

    signal_fields: tuple[str, ...]
    noise_fields: tuple[str, ...]
    signal_numerical: tuple[str, ...]
    noise_numerical: tuple[str, ...]
    signal_values: int


class SyntheticGenerator:
    """Deterministic generator: ``table(start, stop)`` returns rows [start, stop) as a pyarrow Table."""

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 0])
        c, s, v, d = cfg.categorical_fields, cfg.signal_fields, cfg.vocab_size, cfg.latent_dim
        self.categorical = [f"C{i + 1}" for i in range(c)]
        self.numerical = [f"I{i + 1}" for i in range(cfg.numerical_fields)]
        ranks = np.arange(1, v + 1, dtype=np.float64)
        p = ranks ** -cfg.zipf_exponent
        self._cdf = np.cumsum(p / p.sum())
        self.signal_values = max(1, v // 5)
        # Interaction variance ~ pairs * d * sigma^4 ~ 1.5 for the frequent values.
        pairs = max(1, s * (s - 1) // 2)
        sigma = (1.5 / (pairs * d)) ** 0.25
        self._latent = rng.normal(0.0, sigma, size=(s, v, d))
        self._bias = rng.normal(0.0, 0.4, size=(s, v))
        self._latent[:, self.signal_values:] = 0.0
        self._bias[:, self.signal_values:] = 0.0
        # Value tokens are shuffled hex strings, so a value's token says nothing about its frequency rank.
        self._tokens = [np.array([f"{x:08x}" for x in rng.choice(2**31, size=v, replace=False)], dtype=object)
                        for _ in range(c)]
        n_sig_num = (cfg.numerical_fields + 1) // 2
        self._num_coef = np.zeros(cfg.numerical_fields)
        self._num_coef[:n_sig_num] = rng.choice([-0.5, 0.5], size=n_sig_num)
        self._num_scale = rng.uniform(1.0, 3.0, size=cfg.numerical_fields)
        self._offset = -1.0
        self.truth = SyntheticTruth(
            signal_fields=tuple(self.categorical[:s]),
            noise_fields=tuple(self.categorical[s:]),
            signal_numerical=tuple(self.numerical[:n_sig_num]),
            noise_numerical=tuple(self.numerical[n_sig_num:]),
            signal_values=self.signal_values,
        )

    @property
    def columns(self) -> list[str]:
        """Column order of generated tables (and of the raw Criteo format: label, I*, C*)."""
        return [LABEL, *self.numerical, *self.categorical]

    def _block(self, b: int) -> dict[str, np.ndarray]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 1, b])
        n = BLOCK_ROWS
        ranks = np.searchsorted(self._cdf, rng.random((n, cfg.categorical_fields)), side="right")
        ranks = np.minimum(ranks, cfg.vocab_size - 1)
        logit = np.full(n, self._offset)
        s = cfg.signal_fields
        if s:
            lat = np.stack([self._latent[f, ranks[:, f]] for f in range(s)], axis=1)  # (n, s, d)
            summed = lat.sum(axis=1)
            logit += 0.5 * ((summed ** 2).sum(-1) - (lat ** 2).sum(axis=(1, 2)))
            logit += sum(self._bias[f, ranks[:, f]] for f in range(s))
        raw = np.floor(rng.lognormal(mean=1.0, sigma=1.0, size=(n, cfg.numerical_fields)) * self._num_scale)
        missing = rng.random(raw.shape) < 0.1
        z = (np.log1p(raw) - 1.3) / 0.9
        logit += np.where(missing, 0.0, z) @ self._num_coef
        label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
        out: dict[str, np.ndarray] = {LABEL: label}
        for i, name in enumerate(self.numerical):
            out[name] = np.where(missing[:, i], np.nan, raw[:, i])
        for f, name in enumerate(self.categorical):
            out[name] = self._tokens[f][ranks[:, f]]
        return out

    def table(self, start: int = 0, stop: int | None = None) -> pa.Table:
        """Rows [start, stop) (default: all ``cfg.rows``); numerical nulls are missing values."""
        stop = self.cfg.rows if stop is None else stop
        parts = []
        for b in range(start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS + 1 if stop > start else start // BLOCK_ROWS):
            block = self._block(b)
            lo, hi = max(start - b * BLOCK_ROWS, 0), min(stop - b * BLOCK_ROWS, BLOCK_ROWS)
            parts.append({k: v[lo:hi] for k, v in block.items()})
        cols = {}
        for name in self.columns:
            values = np.concatenate([p[name] for p in parts]) if parts else np.array([])
            if name == LABEL:
                cols[name] = pa.array(values, type=pa.int64())
            elif name in self.numerical:
                cols[name] = pa.array(values, type=pa.float64(), from_pandas=True)
            else:
                cols[name] = pa.array(values, type=pa.string())
        return pa.table(cols)
