"""A model's state as a CPU state dict: what stages hand to each other (in-process, through Ray's object store
or in checkpoints). A pruned model's state carries its embedding packed (:mod:`autosrh_ray.engine.packed`)."""
from __future__ import annotations

import torch

from .model import EmbeddingModel


def cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def load_model_state(model: EmbeddingModel, state: dict, assign: bool = False) -> None:
    """Load a state dict (a packed embedding is sized to the state's kept entries); ``assign``: take its tensors
    as they are instead of copying them."""
    missing, unexpected = model.load_state_dict(state, strict=False, assign=assign)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
