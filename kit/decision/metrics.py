"""The competition metric and the usual companions (macro-F1, accuracy, AUC), vectorized.

Per class c: ``Score_c = (a·TP_c − b·FP_c − w·FN_c) / N_c`` with ``N_c`` the number of images whose
true class is c; the competition score is the mean over the classes with ``N_c > 0``.
Inputs are (n, C) 0/1 indicator arrays (one-hot for multi-class). The counts come from one pass of
column sums of products, so one evaluation on 51,043 × 20 takes about 2 ms; the decision layer's
inner loop works on class indices instead and uses :func:`confusion_from_indices` (one bincount).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from kit.config import MetricConfig


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (TP, FP, FN) as int64 arrays of shape (C,); works for one-hot and multi-label alike."""
    y_true = _indicator(y_true, "y_true")
    y_pred = _indicator(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    # int32 accumulation is twice as fast as int64 here and exact below 2**31 rows
    acc = np.int32 if y_true.shape[0] < 2**31 else np.int64
    tp = np.einsum("ij,ij->j", y_true, y_pred, dtype=acc).astype(np.int64)
    n_true = np.einsum("ij->j", y_true, dtype=acc).astype(np.int64)
    n_pred = np.einsum("ij->j", y_pred, dtype=acc).astype(np.int64)
    return tp, n_pred - tp, n_true - tp


def confusion_from_indices(true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) confusion matrix (rows true, columns predicted) in one bincount: the fast multi-class path."""
    flat = np.asarray(true_idx, dtype=np.int64) * n_classes + np.asarray(pred_idx, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, weights: MetricConfig) -> np.ndarray:
    """(a·TP − b·FP − w·FN) / N_c per class, NaN where the class has no true image (N_c = TP + FN = 0)."""
    n_c = (tp + fn).astype(np.float64)
    raw = weights.a * tp - weights.b * fp - weights.w * fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_c > 0, raw / np.where(n_c > 0, n_c, 1.0), np.nan)


def scores_from_confusion(cm: np.ndarray, weights: MetricConfig) -> np.ndarray:
    """Per-class scores from a multi-class confusion matrix (see :func:`confusion_from_indices`)."""
    tp = np.diagonal(cm)
    return scores_from_counts(tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp, weights)


def score_from_indices(true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int, weights: MetricConfig) -> float:
    """The competition score from class indices (multi-class): one bincount, the tuning loops' hot path."""
    return _mean_present(scores_from_confusion(confusion_from_indices(true_idx, pred_idx, n_classes), weights))


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray, weights: MetricConfig) -> np.ndarray:
    """(C,) competition score per class; NaN where N_c == 0 (the class does not count)."""
    return scores_from_counts(*confusion_counts(y_true, y_pred), weights)


def competition_score(y_true: np.ndarray, y_pred: np.ndarray, weights: MetricConfig) -> float:
    """Mean of the per-class scores over the classes present in y_true (the leaderboard number)."""
    return _mean_present(per_class_scores(y_true, y_pred, weights))


def trivial_baseline(
    y_true: np.ndarray,
    weights: MetricConfig,
    task: str | None = None,
    majority: int | None = None,
) -> float:
    """Score of the no-skill prediction every reported score must beat.

    Multi-class: the majority class for every image (taken from y_true unless `majority`, e.g. the
    training majority, is given). Multi-label: negative everywhere. `task=None` infers multi-class
    when every row of y_true has exactly one positive.
    """
    y_true = _indicator(y_true, "y_true")
    if task is None:
        task = "multi-class" if bool((y_true.sum(axis=1) == 1).all()) else "multi-label"
    y_pred = np.zeros_like(y_true)
    if task == "multi-class":
        k = int(np.argmax(y_true.sum(axis=0))) if majority is None else int(majority)
        y_pred[:, k] = 1
    return competition_score(y_true, y_pred, weights)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class F1 = 2TP / (2TP + FP + FN) over classes that are present or predicted."""
    tp, fp, fn = confusion_counts(y_true, y_pred)
    denom = 2 * tp + fp + fn
    if not (denom > 0).any():
        return float("nan")
    return float(np.mean(2 * tp[denom > 0] / denom[denom > 0]))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray, task: str = "multi-class") -> float:
    """Multi-class: fraction of rows predicted exactly; multi-label: mean per-label accuracy (MedMNIST's ACC)."""
    y_true = _indicator(y_true, "y_true")
    y_pred = _indicator(y_pred, "y_pred")
    if task == "multi-label":
        return float(np.mean(y_true == y_pred))
    return float(np.mean((y_true == y_pred).all(axis=1)))


def per_class_auc(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(C,) one-vs-rest ROC AUC; NaN for a class whose labels are all 0 or all 1 (AUC undefined)."""
    y_true = _indicator(y_true, "y_true")
    scores = np.asarray(scores, dtype=np.float64)
    out = np.full(y_true.shape[1], np.nan)
    for c in range(y_true.shape[1]):
        column = y_true[:, c]
        if 0 < column.sum() < len(column):
            out[c] = roc_auc_score(column, scores[:, c])
    return out


def macro_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean one-vs-rest AUC over the classes that have both label values."""
    return _mean_present(per_class_auc(y_true, scores))


def _mean_present(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


def _indicator(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"{name} must be an (n, C) indicator array, got shape {y.shape}")
    if y.dtype == np.bool_:
        return y.view(np.uint8)
    # 0/1 values: uint8 keeps einsum's int32 accumulation legal for any input dtype (int64 from pandas too)
    return y.astype(np.uint8, copy=False)
