"""Small prepared data and configs for the Ray Train tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from autosrh_ray.config import Config, load_config
from autosrh_ray.data.local import prepare_synthetic
from autosrh_ray.data.prepared import EncodedSplit, PreparedData
from autosrh_ray.engine.model import EmbeddingModel
from autosrh_ray.engine.model_state import cpu_state, load_model_state
from autosrh_ray.methods.model import build_model

SMALL = ["dataset.synthetic.rows=3000", "dataset.synthetic.categorical_fields=6", "dataset.synthetic.signal_fields=3",
         "dataset.synthetic.numerical_fields=2", "dataset.synthetic.vocab_size=200", "model.name=deepfm",
         "model.hidden=[16]", "search.K=8", "search.L=3", "train.batch_size=128", "search.max_epochs=1",
         "train.max_epochs=2", "train.patience=1"]


def small_config(*overrides: str) -> Config:
    return load_config(None, [*SMALL, *overrides])


def prepared_small(directory: Path, *overrides: str) -> tuple[Config, PreparedData]:
    config = small_config(*overrides)
    return config, prepare_synthetic(config, directory)


def initial_state(config: Config, prepared: PreparedData) -> dict:
    torch.manual_seed(config.train.seed)
    return cpu_state(build_model(config, prepared.features, prepared.label_mean))


def model_from_state(config: Config, prepared: PreparedData, state: dict, dtype=torch.float64) -> EmbeddingModel:
    model = build_model(config, prepared.features, prepared.label_mean).to(dtype)
    load_model_state(model, state)
    return model


def class_per_rank(split: EncodedSplit) -> EncodedSplit:
    """Reorder so even rows are negatives and odd rows positives: with rows r::2 per rank, rank 0 evaluates only
    negatives and rank 1 only positives (each per-rank AUC is undefined; only the whole split has one)."""
    neg, pos = np.flatnonzero(split.labels == 0), np.flatnonzero(split.labels == 1)
    n = min(len(neg), len(pos))
    order = np.empty(2 * n, dtype=np.int64)
    order[0::2], order[1::2] = neg[:n], pos[:n]
    return EncodedSplit(split.ids[order], split.values[order], split.labels[order])
