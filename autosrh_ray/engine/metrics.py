"""Metrics over a whole split: AUC (tie-aware), log loss, MSE. Never averaged over shards or ranks."""
from __future__ import annotations

import numpy as np


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sx)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each run of equal scores
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC = P(score_pos > score_neg) + ½ P(tie) (Mann–Whitney with average ranks). NaN if one class."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def mse(labels: np.ndarray, preds: np.ndarray) -> float:
    return float(np.mean((np.asarray(preds, dtype=np.float64) - np.asarray(labels, dtype=np.float64)) ** 2))


def reported_metrics(task: str) -> tuple[str, ...]:
    """The metrics a report shows for ``task``: AUC and Logloss (classification) or MSE (regression)."""
    return ("auc", "logloss") if task == "classification" else ("mse",)


def task_metrics(task: str, labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """{auc, logloss} from logits (classification) or {mse} from predictions (regression)."""
    if task == "classification":
        probs = 1.0 / (1.0 + np.exp(-np.asarray(outputs, dtype=np.float64)))
        return {"auc": auc(labels, probs), "logloss": logloss(labels, probs)}
    return {"mse": mse(labels, outputs)}


def validation_loss(task: str, metrics: dict[str, float]) -> float:
    """The early-stopping criterion: log loss or MSE over the whole validation split."""
    return metrics["logloss"] if task == "classification" else metrics["mse"]
