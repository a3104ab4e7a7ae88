"""A model's state as a CPU state dict: what stages hand to each other (in-process, through Ray's object store
or in checkpoints). A pruned model's state carries its embedding packed (:mod:`autosrh_ray.engine.packed`)."""
from __future__ import annotations

from typing import Optional

import torch

from .models import EmbeddingModel, build_model
from .packed import is_packed


def cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def load_model_state(model: EmbeddingModel, state: dict, assign: bool = False) -> None:
    """Load a state dict (a packed embedding is sized to the state's kept entries); ``assign``: take its tensors
    as they are instead of copying them."""
    missing, unexpected = model.load_state_dict(state, strict=False, assign=assign)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")


def model_from_state(config, features, label_mean: float, state: dict, retrain: bool = True,
                     share: bool = False, dtype: Optional[torch.dtype] = None) -> EmbeddingModel:
    """The model ``state`` belongs to (packed once pruned), with the state loaded (into ``dtype``, if given: a
    float64 checkpoint stays exact). ``share``: the model takes the state's tensors as they are (no copy; for
    read-only use such as pruning; built on the CPU, not the meta device, whose first use costs a second)."""
    model = build_model(config, features, label_mean, retrain=retrain, packed=is_packed(state))
    load_model_state(model.to(dtype=dtype) if dtype is not None else model, state, assign=share)
    return model
