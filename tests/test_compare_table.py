"""``comparison.md``'s table: mean ± std over seeds, and the mean alone for a single seed (no ``± 0.0000``)."""
from __future__ import annotations

from autosrh_ray.compare import summarise, table


def _row(method: str, seed: int, auc: float) -> dict:
    return {"method": method, "budget": "cr10", "seed": seed, "test": {"auc": auc, "logloss": 1 - auc},
            "params": {"kept": 1000, "projection": 0}, "bytes": {"embedding": 6000, "bytes_cr": 8.0}, "cr_achieved": 10.0,
            "timings_s": {"search": 1.0, "retrain": 2.0}, "total_s": 3.0}


def test_one_seed_has_no_spread_and_several_do():
    rows = [_row("autosrh", 0, 0.75), _row("uniform", 0, 0.70), _row("uniform", 1, 0.72)]
    text = table(summarise(rows, "classification"), "classification")
    one = next(line for line in text.splitlines() if line.startswith("| autosrh "))
    two = next(line for line in text.splitlines() if line.startswith("| uniform "))
    assert "±" not in one and "| 0.7500 |" in one and "| 5.9 | 8.00 |" in one  # embedding KiB, bytes CR
    assert "0.7100 ± 0.0100" in two  # mean and (population) std of 0.70 and 0.72
