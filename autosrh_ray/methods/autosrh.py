"""AutoSrh (the paper's Algorithms 1–4): a bi-level search of α (per frequency block and dimension) and Θ, prune
|E ⊙ α| to each budget, retrain with the mask. The only method a Ray Tune study searches."""
from .graph import run_pruned
from .registry import Method

AUTOSRH = Method("autosrh", run_pruned, first_stage="search", soft_selection=True, blocked=True, byte_budgets=True,
                 studied=True)
