"""A model's state as a CPU state dict: what stages hand to each other (in-process, through Ray's object store
or in checkpoints). A pruned model's state carries its mask as ``embedding.mask``."""
from __future__ import annotations

import torch

from .models import EmbeddingModel


def cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def load_model_state(model: EmbeddingModel, state: dict) -> None:
    """Load a state dict, installing its pruning mask (a buffer absent from a fresh model) first."""
    state = dict(state)
    mask = state.pop("embedding.mask", None)
    if mask is not None:
        model.embedding.set_mask(mask)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "embedding.mask"]:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
