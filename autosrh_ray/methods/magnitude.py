"""Magnitude pruning: train UE until the validation loss stops improving, prune |E| to each budget, retrain with
the mask (the baseline AutoSrh's α has to beat)."""
from .graph import run_pruned
from .registry import Method

MAGNITUDE = Method("magnitude", run_pruned, first_stage="uniform", byte_budgets=True)
