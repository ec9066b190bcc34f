"""The competition's metric as an object, by name through one registry (`METRICS`), vectorized.

Everything that scores predictions in the kit (training's checkpoint choice, calibrate, blend, `kit score`)
goes through a metric built from the config's `[metric]` table by `build_metric`. Each metric says its
`kind`, which decides what a submission holds and which decision candidates apply, and its `direction`:

- kind "label" (scored on (n, C) 0/1 indicators; per-class confusion counts TP, FP, FN):
  `linear` per class ``(a·TP − b·FP − w·FN) / N_c`` (the chest X-ray competition: a = b = 1, w = 5);
  `macro_f1` per class ``2·TP / (2·TP + FP + FN)``; `balanced_accuracy` per class recall (multi-class);
  `accuracy` the fraction of rows right (multi-class; = micro-F1); `quadratic_weighted_kappa` on ordinal
  grades (the classes in their order are the grades 0..C-1);
- kind "probability" (scored on (n, C) probabilities): `log_loss` (minimised), Kaggle's: multi-class rows
  normalised then clipped to [1e-15, 1 − 1e-15]; multi-label the mean over columns; optional per-class weights;
- kind "ranking" (scored on (n, C) scores, only their order within each column counts): `roc_auc` (mean
  per-class AUC over the classes that have both labels: one-vs-rest macro for multi-class, the AUC of the
  positive column for two classes) and `mean_average_precision` (mean per-class average precision over the
  classes with a positive).

Count metrics average their per-class scores over the classes where they are defined (NaN elsewhere, e.g.
a class with no true image); the decision layer's inner loops work on class indices (`score_from_indices`).
Adding a metric is one decorated definition (`@METRICS.register(name)`) and its test (tests/test_metrics.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from kit.registry import Registry

if TYPE_CHECKING:
    from kit.config import MetricConfig

_TINY = 1e-12
KINDS = ("label", "probability", "ranking")  # what the metric scores, so what a submission holds
LOG_LOSS_EPS = 1e-15  # Kaggle's clipping of submitted probabilities
METRICS: Registry[type] = Registry("metric")


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
    kind: str  # "label", "probability" or "ranking" (KINDS)
    direction: str  # "maximize" or "minimize" (log-loss)

    def score(self, y_true: np.ndarray, values: np.ndarray) -> float:
        """The leaderboard number of (n, C) indicator labels against the values the metric scores."""
        ...

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


class _MetricBase:
    """What every metric says about itself: its kind and its direction, and how to compare two scores."""

    name: ClassVar[str]
    kind: ClassVar[str] = "label"
    direction: ClassVar[str] = "maximize"

    @property
    def sign(self) -> float:
        """+1 when higher is better, -1 when lower is: `sign · score` is always to be maximised."""
        return 1.0 if self.direction == "maximize" else -1.0

    def better(self, a: float, b: float) -> bool:
        """Whether score `a` is strictly better than score `b` under this metric's direction."""
        return self.sign * a > self.sign * b

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v:g}" for k, v in self.params().items() if k != "name" and isinstance(v, float))
        text = f"{self.name}({extra})" if extra else self.name
        return text + (" (lower is better)" if self.direction == "minimize" else "")

    def params(self) -> dict[str, Any]:
        return {"name": self.name}

    def bayes_weights(self, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        return None

    def threshold(self) -> float | None:
        return None


class _CountMetric(_MetricBase):
    """Scoring entry points shared by every label metric: each reduces to its confusion counts."""

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

    def scores_from_confusions(self, cm: np.ndarray) -> np.ndarray:
        """(G,) scores of (G, C, C) multi-class confusion matrices (rows true): the offsets search's batch."""
        tp = np.diagonal(cm, axis1=1, axis2=2)
        per_class = self.per_class_from_counts(tp, cm.sum(axis=1) - tp, cm.sum(axis=2) - tp)  # (G, C)
        present = ~np.isnan(per_class)
        return np.where(present, per_class, 0.0).sum(axis=1) / np.maximum(present.sum(axis=1), 1)

    def score_from_indices(self, true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int) -> float:
        """Multi-class score from class indices (one bincount): the tuning loops' hot path."""
        return self.score_from_confusion(confusion_from_indices(true_idx, pred_idx, n_classes))


@METRICS.register("linear")
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


@METRICS.register("macro_f1")
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

@METRICS.register("balanced_accuracy")
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


@METRICS.register("accuracy")
@dataclass(frozen=True)
class Accuracy(_CountMetric):
    """The fraction of rows predicted right (multi-class; = micro-F1 for single-label). Per class: recall,
    for the per-class tables only. Predicting k gains p_k in expectation: the Bayes rule is argmax."""

    name: ClassVar[str] = "accuracy"

    def per_class_from_counts(self, tp, fp, fn) -> np.ndarray:
        return BalancedAccuracy().per_class_from_counts(tp, fp, fn)

    def score(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        tp, _, fn = confusion_counts(y_true, y_pred)
        return float(tp.sum() / max(int((tp + fn).sum()), 1))

    def score_from_confusion(self, cm: np.ndarray) -> float:
        return float(np.trace(cm) / max(int(cm.sum()), 1))

    def scores_from_confusions(self, cm: np.ndarray) -> np.ndarray:
        return np.trace(cm, axis1=1, axis2=2) / np.maximum(cm.sum(axis=(1, 2)), 1)

    def bayes_weights(self, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ones(len(prior)), np.zeros(len(prior))


@METRICS.register("quadratic_weighted_kappa")
@dataclass(frozen=True)
class QuadraticWeightedKappa(_CountMetric):
    """Cohen's kappa with quadratic weights on ordinal grades: the classes in their order are grades 0..C-1.
    ``1 − Σ W·O / Σ W·E`` with ``W_ij = (i − j)²``, O the confusion matrix and E the outer product of its
    margins over N (scikit-learn's `cohen_kappa_score(weights="quadratic")`). Per class: recall, for the tables."""

    name: ClassVar[str] = "quadratic_weighted_kappa"

    def per_class_from_counts(self, tp, fp, fn) -> np.ndarray:
        return BalancedAccuracy().per_class_from_counts(tp, fp, fn)

    def score(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        y_true, y_pred = _indicator(y_true, "y_true"), _indicator(y_pred, "y_pred")
        return self.score_from_indices(y_true.argmax(axis=1), y_pred.argmax(axis=1), y_true.shape[1])

    def score_from_confusion(self, cm: np.ndarray) -> float:
        return float(self.scores_from_confusions(np.asarray(cm)[None])[0])

    def scores_from_confusions(self, cm: np.ndarray) -> np.ndarray:
        cm = np.asarray(cm, dtype=np.float64)
        c = cm.shape[-1]
        grades = np.arange(c, dtype=np.float64)
        w = (grades[:, None] - grades[None, :]) ** 2
        n = cm.sum(axis=(1, 2))
        expected = cm.sum(axis=2)[:, :, None] * cm.sum(axis=1)[:, None, :] / np.maximum(n, 1)[:, None, None]
        observed_cost, expected_cost = (w * cm).sum(axis=(1, 2)), (w * expected).sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(expected_cost > 0, 1.0 - observed_cost / np.where(expected_cost > 0, expected_cost, 1.0), np.nan)


class _ValueMetric(_MetricBase):
    """A metric of probabilities or scores: (n, C) indicator labels against (n, C) values."""

    def per_class(self, y_true: np.ndarray, values: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def score(self, y_true: np.ndarray, values: np.ndarray) -> float:
        return mean_present(self.per_class(y_true, values))

    def trivial_values(self, y_true: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
        """The no-skill submission: the (training) prior in every row (a constant: AUC 0.5, AP the prevalence)."""
        y_true = _indicator(y_true, "y_true")
        pi = y_true.mean(axis=0) if prior is None else np.asarray(prior, dtype=np.float64)
        return np.broadcast_to(np.asarray(pi, dtype=np.float64), y_true.shape).copy()


@METRICS.register("roc_auc")
@dataclass(frozen=True)
class RocAuc(_ValueMetric):
    """Mean per-class ROC AUC over the classes that have both labels (ties count one half). Multi-class:
    one-vs-rest macro (scikit-learn's `multi_class="ovr"`); two classes: the AUC of the second class's column,
    as Kaggle scores a binary `target`. Any per-class monotone transform of the scores leaves it unchanged."""

    name: ClassVar[str] = "roc_auc"
    kind: ClassVar[str] = "ranking"

    def per_class(self, y_true: np.ndarray, values: np.ndarray) -> np.ndarray:
        y_true, values = _indicator(y_true, "y_true"), _values(values, y_true.shape)
        if _single_label(y_true) and y_true.shape[1] == 2:
            return np.full(2, _auc_columns(y_true[:, 1:], values[:, 1:])[0])
        return _auc_columns(y_true, values)


@METRICS.register("mean_average_precision")
@dataclass(frozen=True)
class MeanAveragePrecision(_ValueMetric):
    """Mean per-class average precision over the classes with a positive (scikit-learn's
    `average_precision_score`: precision at each distinct score weighted by the recall it adds)."""

    name: ClassVar[str] = "mean_average_precision"
    kind: ClassVar[str] = "ranking"

    def per_class(self, y_true: np.ndarray, values: np.ndarray) -> np.ndarray:
        y_true, values = _indicator(y_true, "y_true"), _values(values, y_true.shape)
        return np.array([_average_precision(y_true[:, c], values[:, c]) for c in range(y_true.shape[1])])


@METRICS.register("log_loss")
@dataclass(frozen=True)
class LogLoss(_ValueMetric):
    """Kaggle's log-loss (minimised). Multi-class: each row divided by its sum, then clipped to
    [1e-15, 1 − 1e-15], the mean of −log p of the true class (with `weights`: the weighted mean over classes of
    each class's mean). Multi-label: the mean over columns of each column's binary log-loss (weighted by `weights`).
    Its decision is calibrated probabilities (kit.decision.candidates)."""

    weights: tuple[float, ...] | None = None
    name: ClassVar[str] = "log_loss"
    kind: ClassVar[str] = "probability"
    direction: ClassVar[str] = "minimize"

    def per_class(self, y_true: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Multi-class: the mean −log p over each class's rows; multi-label: each column's log-loss."""
        y_true, p = _indicator(y_true, "y_true"), _values(values, y_true.shape)
        counts = y_true.sum(axis=0).astype(np.float64)
        if _single_label(y_true):
            p = np.clip(p / np.where(p.sum(axis=1, keepdims=True) > 0, p.sum(axis=1, keepdims=True), 1.0), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(counts > 0, -(y_true * np.log(p)).sum(axis=0) / np.where(counts > 0, counts, 1.0), np.nan)
        p = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
        return -(y_true * np.log(p) + (1 - y_true) * np.log1p(-p)).mean(axis=0)

    def score(self, y_true: np.ndarray, values: np.ndarray) -> float:
        y_true = _indicator(y_true, "y_true")
        per_class = self.per_class(y_true, values)
        w = np.ones(y_true.shape[1]) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        if len(w) != y_true.shape[1]:
            raise ValueError(f"log_loss has {len(w)} class weights for {y_true.shape[1]} classes")
        if _single_label(y_true) and self.weights is None:  # the plain mean over rows
            counts = y_true.sum(axis=0)
            return float(np.nansum(per_class * counts) / counts.sum())
        present = ~np.isnan(per_class)
        return float((w[present] * per_class[present]).sum() / w[present].sum())

    def params(self) -> dict[str, Any]:
        return {"name": self.name} if self.weights is None else {"name": self.name, "weights": [float(x) for x in self.weights]}


def build_metric(cfg: MetricConfig | dict) -> Metric:
    """The metric named by the config's `[metric]` table (or a stored `params()` dict)."""
    params = cfg.model_dump(exclude_none=True) if hasattr(cfg, "model_dump") else dict(cfg)
    name = params.pop("name", "linear")
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {METRICS.names()}")
    if name == LinearCountMetric.name:
        return LinearCountMetric(**{k: float(params[k]) for k in ("a", "b", "w") if k in params})
    if name == LogLoss.name and params.get("weights") is not None:
        return LogLoss(weights=tuple(float(x) for x in params["weights"]))
    return METRICS.get(name)()


def trivial_baseline(y_true: np.ndarray, metric: Metric, task: str | None = None, majority: int | None = None,
                     prior: np.ndarray | None = None) -> float:
    """Score of the no-skill prediction every reported score must beat.

    Label metrics, multi-class: the majority class for every image (taken from y_true unless `majority`, e.g.
    the training majority, is given); multi-label: negative everywhere. Probability and ranking metrics: the
    class prior in every row (`prior`, e.g. the training prior, else y_true's): for AUC a constant (0.5).
    `task=None` infers multi-class when every row of y_true has exactly one positive.
    """
    y_true = _indicator(y_true, "y_true")
    if task is None:
        task = "multi-class" if _single_label(y_true) else "multi-label"
    return metric.score(y_true, trivial_prediction(y_true, task, majority, metric=metric, prior=prior))


def trivial_prediction(y_true: np.ndarray, task: str, majority: int | None = None, *, metric: Metric | None = None,
                       prior: np.ndarray | None = None) -> np.ndarray:
    """The no-skill prediction: the (given or observed) majority class everywhere; multi-label: all negative;
    for a probability or ranking metric, the prior in every row."""
    if metric is not None and metric.kind != "label":
        return metric.trivial_values(y_true, prior)
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


def _auc_columns(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(C,) AUC per column by the rank-sum (Mann-Whitney) formula, ties at their mean rank; NaN without both labels."""
    ranks = rankdata(scores, axis=0)
    positives = y_true.sum(axis=0).astype(np.float64)
    negatives = len(y_true) - positives
    rank_sum = (ranks * y_true).sum(axis=0)
    defined = (positives > 0) & (negatives > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2) / np.where(defined, positives * negatives, 1.0)
    return np.where(defined, auc, np.nan)


def _average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """One column's average precision, as scikit-learn computes it: Σ (R_k − R_{k−1}) · P_k over the distinct
    scores from the highest; NaN without a positive."""
    positives = int(y.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order].astype(np.float64)
    last = np.r_[p_sorted[1:] != p_sorted[:-1], True]  # the last row of each run of equal scores
    tp = np.cumsum(y_sorted)[last]
    precision = tp / (np.flatnonzero(last) + 1.0)
    recall_gain = np.diff(np.r_[0.0, tp]) / positives
    return float((recall_gain * precision).sum())


def _values(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != shape:
        raise ValueError(f"values have shape {values.shape} but y_true has shape {shape}")
    return values


def _single_label(y_true: np.ndarray) -> bool:
    return bool((y_true.sum(axis=1) == 1).all())


def _indicator(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"{name} must be an (n, C) indicator array, got shape {y.shape}")
    if y.dtype == np.bool_:
        return y.view(np.uint8)
    # 0/1 values: uint8 keeps einsum's int32 accumulation legal for any input dtype (int64 from pandas too)
    return y.astype(np.uint8, copy=False)
