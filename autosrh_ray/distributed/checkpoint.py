"""Per-epoch checkpoints of a Train loop: model, optimiser states, step, RNG states, best-by-validation.

Layout of one checkpoint directory (Ray Train merges every rank's files into it)::

    state.pt        rank 0: LoopState (model, optimisers, epoch, step, best state, history, resumes)
    rng-<rank>.pt   every rank: its torch / numpy / python RNG states

Model state dicts are stored on the CPU; a pruned model's embedding travels packed (``embedding.kept.weight``,
``embedding.indptr``, ``embedding.dims``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..engine.training import BestSoFar

STATE_FILE = "state.pt"


@dataclass
class LoopState:
    """What a loop needs to resume at an epoch boundary, and what the driver reads back at the end."""

    epoch: int = 0  # completed evaluation periods ("epochs"; passes unless train.eval_every_steps is set)
    step: int = 0  # completed optimiser steps
    model: dict = field(default_factory=dict)
    optimizer: object = None
    best: BestSoFar = field(default_factory=BestSoFar)  # best-by-validation evaluation and its model state
    stopped: bool = False
    stop_reason: str = ""  # patience | max_epochs | budget (PEP), once the stage has ended
    data_epoch: int = 0  # the pass over the train split the next period continues
    position: int = 0  # batches of that pass already trained on
    history: list = field(default_factory=list)
    resumes: list = field(default_factory=list)  # the step each restore started from
    seconds: float = 0.0  # loop time summed over attempts (of this phase)
    phase: int = 0  # a study trial's run: 0 = its search, 1 = the retrain after pruning
    searched: Optional["LoopState"] = None  # in phase 1: how the search ended (its best state, no optimiser)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def write(directory: Path, rank: int, state: Optional[LoopState]) -> None:
    """Write this rank's files (``state`` only on rank 0)."""
    torch.save(rng_state(), directory / f"rng-{rank}.pt")
    if state is not None:
        torch.save(state, directory / STATE_FILE)


def read_state(directory: Path) -> LoopState:
    return torch.load(Path(directory) / STATE_FILE, weights_only=False)


def read_rng(directory: Path, rank: int) -> Optional[dict]:
    path = Path(directory) / f"rng-{rank}.pt"
    return torch.load(path, weights_only=False) if path.exists() else None
