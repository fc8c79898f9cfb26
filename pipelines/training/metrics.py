"""Exact offline metrics for CTR predictions (numpy / pandas).

Every function takes labels in {0, 1} and scores (predicted click probabilities).
Degenerate inputs (one class only, no data) give NaN rather than an error.

* ``auc``: ROC AUC by ranks (Mann-Whitney U), tied scores get their average rank,
  so a positive and a negative with the same score count one half:
  (R+ - n+ (n+ + 1) / 2) / (n+ n-), R+ the sum of the positives' ranks. The project's one
  exact AUC: jobs, tests and benchmarks call it (the trainer's per-epoch ``keras_auc`` is
  Keras' streaming approximation).
* ``logloss``: mean binary cross-entropy, scores clipped to [eps, 1 - eps].
* ``gauc``: per-user AUC (the same formula) averaged with weights = the user's number of impressions;
  users whose impressions are all clicks or all non-clicks are skipped.
* ``pr_auc``: average precision, sum_k (R_k - R_{k-1}) P_k over the distinct score
  thresholds in decreasing order (tied scores form one threshold).
* ``calibration``: mean score / mean label (1.0 = calibrated on average; the ratio of
  He et al. 2014, "Practical Lessons from Predicting Clicks on Ads at Facebook").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EPS = 1e-7
METRIC_NAMES = ("auc", "logloss", "gauc", "pr_auc", "calibration")


def _arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1).astype(np.float64)
    s = np.asarray(scores).reshape(-1).astype(np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return y, s


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of the last member of each tie group
    return (upper - (counts - 1) / 2.0)[inverse]


def _mann_whitney_auc(positive_rank_sum, n_pos, n_neg):
    """AUC from the positives' rank sum; works on scalars and on per-group pandas Series alike."""
    return (positive_rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def auc(labels, scores) -> float:
    y, s = _arrays(labels, scores)
    n_pos = y.sum()
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(s)
    return float(_mann_whitney_auc(ranks[y == 1].sum(), n_pos, n_neg))


def logloss(labels, scores, eps: float = EPS) -> float:
    y, s = _arrays(labels, scores)
    if y.size == 0:
        return float("nan")
    p = np.clip(s, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def gauc(users, labels, scores) -> float:
    y, s = _arrays(labels, scores)
    users = np.asarray(users).reshape(-1)
    if users.size != y.size:
        raise ValueError(f"users and labels differ in length: {users.size} vs {y.size}")
    if y.size == 0:
        return float("nan")
    codes, _ = pd.factorize(users, use_na_sentinel=False)
    df = pd.DataFrame({"u": codes, "y": y, "s": s})
    df["rank"] = df.groupby("u")["s"].rank(method="average")
    df["pos_rank"] = df["rank"] * df["y"]
    g = df.groupby("u").agg(n=("y", "size"), n_pos=("y", "sum"), rank_sum=("pos_rank", "sum"))
    g = g[(g["n_pos"] > 0) & (g["n_pos"] < g["n"])]
    if g.empty:
        return float("nan")
    n_neg = g["n"] - g["n_pos"]
    user_auc = _mann_whitney_auc(g["rank_sum"], g["n_pos"], n_neg)
    return float((user_auc * g["n"]).sum() / g["n"].sum())


def pr_auc(labels, scores) -> float:
    y, s = _arrays(labels, scores)
    n_pos = y.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(s_sorted)), y.size - 1]
    tps = np.cumsum(y_sorted)[last_of_threshold]
    predicted = last_of_threshold + 1.0
    precision = tps / predicted
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def calibration(labels, scores) -> float:
    y, s = _arrays(labels, scores)
    if y.size == 0 or y.sum() == 0:
        return float("nan")
    return float(s.mean() / y.mean())


def evaluate(labels, scores, users=None) -> dict[str, float]:
    """All of METRIC_NAMES (gauc is NaN without users)."""
    return {
        "auc": auc(labels, scores),
        "logloss": logloss(labels, scores),
        "gauc": gauc(users, labels, scores) if users is not None else float("nan"),
        "pr_auc": pr_auc(labels, scores),
        "calibration": calibration(labels, scores),
    }
