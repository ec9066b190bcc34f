"""The competition's metric as an object, and the usual companions (macro-F1, AUC), vectorized.

A `Metric` turns per-class confusion counts (TP, FP, FN) into per-class scores and says, when it can,
what the Bayes-optimal decision for calibrated probabilities is. Everything that scores predictions in
the kit (training's checkpoint choice, calibrate, blend, `kit score`) goes through one of these, built
from the config's `[metric]` table by `build_metric`:

- `linear`: per class ``(a·TP − b·FP − w·FN) / N_c`` (the competition: a = b = 1, w = 5);
- `macro_f1`: per class ``2·TP / (2·TP + FP + FN)``;
- `balanced_accuracy`: per class recall ``TP / N_c`` (multi-class only).

The score is the mean of the per-class scores over the classes where the score is defined (NaN
elsewhere, e.g. a class with no true image). Inputs are (n, C) 0/1 indicator arrays (one-hot for
multi-class); the decision layer's inner loops work on class indices and use `score_from_indices`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from sklearn.metrics import roc_auc_score

from kit.config import MetricConfig

_TINY = 1e-12


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


def counts_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TP, FP, FN) per class of a multi-class confusion matrix."""
    tp = np.diagonal(cm)
    return tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp


@runtime_checkable
class Metric(Protocol):
    """What the decision layer needs from a metric."""

    name: str

    def per_class_from_counts(self, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
        """Per-class scores (NaN where undefined); counts may carry extra leading axes (e.g. cut points)."""
        ...

    def bayes_weights(self, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(u, v) such that predicting argmax_k u_k·p_k + v_k maximizes the expected score for calibrated p
        under class prior `prior`, or None when the metric has no closed form."""
        ...

    def threshold(self) -> float | None:
        """Multi-label: the probability above which predicting a label maximizes its expected score, or None."""
        ...

    def params(self) -> dict[str, Any]:
        """Name and parameters, as stored beside every result the metric produced."""
        ...


class _CountMetric:
    """Scoring entry points shared by every metric: each reduces to `per_class_from_counts`."""

    name: ClassVar[str]

    def per_class_from_counts(self, tp, fp, fn) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def per_class(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """(C,) score per class from (n, C) indicator arrays; NaN where the class does not count."""
        return self.per_class_from_counts(*confusion_counts(y_true, y_pred))

    def score(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        """Mean of the per-class scores over the classes where they are defined (the leaderboard number)."""
        return mean_present(self.per_class(y_true, y_pred))

    def score_from_confusion(self, cm: np.ndarray) -> float:
        return mean_present(self.per_class_from_counts(*counts_from_confusion(cm)))

    def score_from_indices(self, true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int) -> float:
        """Multi-class score from class indices (one bincount): the tuning loops' hot path."""
        return self.score_from_confusion(confusion_from_indices(true_idx, pred_idx, n_classes))

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v:g}" for k, v in self.params().items() if k != "name")
        return f"{self.name}({extra})" if extra else self.name

    def params(self) -> dict[str, Any]:
        return {"name": self.name}


@dataclass(frozen=True)
class LinearCountMetric(_CountMetric):
    """Per class (a·TP − b·FP − w·FN) / N_c: the chest X-ray competition's metric with a = b = 1, w = 5.

    One more true positive of class c is worth (a + w)/N_c and each false positive predicted as c costs
    b/N_c, so the Bayes-optimal prediction is argmax_k ((a+b+w)·p_k − b)/N_k (docs/decision.md), not argmax.
    """

    a: float = 1.0
    b: float = 1.0
    w: float = 5.0
    name: ClassVar[str] = "linear"

    def per_class_from_counts(self, tp, fp, fn) -> np.ndarray:
        tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
        n_c = tp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_c > 0, (self.a * tp - self.b * fp - self.w * fn) / np.where(n_c > 0, n_c, 1.0), np.nan)

    def bayes_weights(self, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pi = np.clip(np.asarray(prior, dtype=np.float64), _TINY, None)
        return (self.a + self.b + self.w) / pi, -self.b / pi

    def threshold(self) -> float:
        return self.b / (self.a + self.b + self.w)

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "a": float(self.a), "b": float(self.b), "w": float(self.w)}


@dataclass(frozen=True)
class MacroF1(_CountMetric):
    """Per class F1 = 2·TP / (2·TP + FP + FN), over the classes that are present or predicted.

    The F1-optimal decision depends on the data's own F1 (no closed form), so the decision layer
    searches it (per-class offsets, or per-class thresholds for multi-label)."""

    name: ClassVar[str] = "macro_f1"

    def per_class_from_counts(self, tp, fp, fn) -> np.ndarray:
        tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
        denom = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), np.nan)

    def bayes_weights(self, prior: np.ndarray) -> None:
        return None

    def threshold(self) -> None:
        return None


@dataclass(frozen=True)
class BalancedAccuracy(_CountMetric):
    """Mean per-class recall TP / N_c (scikit-learn's balanced accuracy for multi-class).

    Predicting k gains p_k/N_k in expectation, so the Bayes rule is argmax_k p_k/π_k."""

    name: ClassVar[str] = "balanced_accuracy"

    def per_class_from_counts(self, tp, fp, fn) -> np.ndarray:
        tp, fn = np.asarray(tp, dtype=np.float64), np.asarray(fn, dtype=np.float64)
        n_c = tp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_c > 0, tp / np.where(n_c > 0, n_c, 1.0), np.nan)

    def bayes_weights(self, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pi = np.clip(np.asarray(prior, dtype=np.float64), _TINY, None)
        return 1.0 / pi, np.zeros_like(pi)

    def threshold(self) -> None:
        return None


METRICS: dict[str, type] = {m.name: m for m in (LinearCountMetric, MacroF1, BalancedAccuracy)}


def build_metric(cfg: MetricConfig | dict) -> LinearCountMetric | MacroF1 | BalancedAccuracy:
    """The metric named by the config's `[metric]` table (or a stored `params()` dict)."""
    params = cfg.model_dump() if isinstance(cfg, MetricConfig) else dict(cfg)
    name = params.pop("name", "linear")
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    if name == LinearCountMetric.name:
        return LinearCountMetric(**{k: float(params[k]) for k in ("a", "b", "w") if k in params})
    return METRICS[name]()


def trivial_baseline(y_true: np.ndarray, metric: Metric, task: str | None = None, majority: int | None = None) -> float:
    """Score of the no-skill prediction every reported score must beat.

    Multi-class: the majority class for every image (taken from y_true unless `majority`, e.g. the
    training majority, is given). Multi-label: negative everywhere. `task=None` infers multi-class
    when every row of y_true has exactly one positive.
    """
    y_true = _indicator(y_true, "y_true")
    if task is None:
        task = "multi-class" if bool((y_true.sum(axis=1) == 1).all()) else "multi-label"
    return metric.score(y_true, trivial_prediction(y_true, task, majority))


def trivial_prediction(y_true: np.ndarray, task: str, majority: int | None = None) -> np.ndarray:
    """The no-skill prediction: the (given or observed) majority class everywhere; multi-label: all negative."""
    y_pred = np.zeros_like(_indicator(y_true, "y_true"))
    if task == "multi-class":
        k = int(np.argmax(y_true.sum(axis=0))) if majority is None else int(majority)
        y_pred[:, k] = 1
    return y_pred


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class F1 over the classes that are present or predicted (a reporting companion)."""
    return MacroF1().score(y_true, y_pred)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present (a reporting companion)."""
    return BalancedAccuracy().score(y_true, y_pred)


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
    return mean_present(per_class_auc(y_true, scores))


def mean_present(values: np.ndarray) -> float:
    """Mean over the non-NaN entries (NaN when there are none)."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


def signed(x: float | None) -> str:
    """A score as the kit prints it in tables: +0.1234, or — when there is none (None or NaN)."""
    return "—" if x is None or np.isnan(x) else f"{x:+.4f}"


def _indicator(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"{name} must be an (n, C) indicator array, got shape {y.shape}")
    if y.dtype == np.bool_:
        return y.view(np.uint8)
    # 0/1 values: uint8 keeps einsum's int32 accumulation legal for any input dtype (int64 from pandas too)
    return y.astype(np.uint8, copy=False)
