"""From logits to predictions that maximize the competition metric (DESIGN §2).

Pure functions plus one small, JSON-serializable :class:`Decision`:

1. temperature T (fitted by NLL on OOF) and prior correction ``logit/T − log q + log π`` turn a
   model's logits into calibrated log-probabilities under the true class distribution π;
2. multi-class: the Bayes rule ``argmax_k ((a+b+w)·p_k − b) / π_k`` (not argmax), optionally after
   per-class offsets added to the log-probabilities (zero offsets == the closed-form rule);
3. multi-label: per-class thresholds on calibrated probabilities (Youden's J, best F1, or least cost,
   whose closed form for calibrated p is b/(a+b+w)).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.metrics import precision_recall_curve, roc_curve

from kit.config import MetricConfig
from kit.errors import KitError
from kit.files import write_json

RULES = ("argmax", "prior_argmax", "bayes", "bayes_offsets", "thresholds")
THRESHOLD_METHODS = ("youden", "f1", "cost")
_TINY = 1e-12


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _TINY, 1 - _TINY)
    return np.log(p) - np.log1p(-p)


def class_prior(labels: np.ndarray) -> np.ndarray:
    """(C,) class frequencies of an indicator array (multi-label: positive rate per class), never exactly
    0 or 1: the N_k estimate of the Bayes rule and the target prior of the prior correction."""
    labels = np.asarray(labels)
    counts = labels.sum(axis=0).astype(np.float64)
    if labels.ndim == 2 and (labels.sum(axis=1) == 1).all():
        return np.clip(counts / counts.sum(), _TINY, None)
    return np.clip(counts / len(labels), _TINY, 1 - _TINY)


def prior_shift(train_prior: np.ndarray, target_prior: np.ndarray, task: str) -> np.ndarray:
    """(C,) term added to tempered logits so the model predicts under `target_prior` instead of `train_prior`."""
    q = np.asarray(train_prior, dtype=np.float64)
    pi = np.asarray(target_prior, dtype=np.float64)
    if task == "multi-label":  # each class is its own binary problem with positive rate q_c
        return _logit(pi) - _logit(q)
    return np.log(np.clip(pi, _TINY, None)) - np.log(np.clip(q, _TINY, None))


def calibrated_log_probs(
    logits: np.ndarray,
    temperature: float,
    train_prior: np.ndarray,
    target_prior: np.ndarray,
    task: str,
) -> np.ndarray:
    """Multi-class: log_softmax(logits/T − log q + log π); multi-label: log sigmoid of the corrected logit."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature) + prior_shift(train_prior, target_prior, task)
    return _log_sigmoid(z) if task == "multi-label" else log_softmax(z, axis=1)


def fit_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    train_prior: np.ndarray | None = None,
    target_prior: np.ndarray | None = None,
    task: str = "multi-class",
    bounds: tuple[float, float] = (0.05, 20.0),
) -> float:
    """Temperature minimizing the NLL of the (prior-corrected) calibrated probabilities on labelled OOF.

    Searched on log T in a bounded range, so one bad fold can never produce T ≤ 0 or an absurd T.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    c = logits.shape[1]
    shift = np.zeros(c) if train_prior is None or target_prior is None else prior_shift(train_prior, target_prior, task)
    if task == "multi-label":
        y = labels.astype(np.float64)

        def nll(log_t: float) -> float:
            z = logits / np.exp(log_t) + shift
            return float(np.mean(np.logaddexp(0.0, z) - y * z))
    else:
        idx = labels.argmax(axis=1)
        rows = np.arange(len(idx))

        def nll(log_t: float) -> float:
            z = logits / np.exp(log_t) + shift
            return float(np.mean(np.logaddexp.reduce(z, axis=1) - z[rows, idx]))

    result = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def rule_predictor(
    log_probs: np.ndarray,
    rule: str,
    target_prior: np.ndarray,
    weights: MetricConfig,
) -> Callable[[np.ndarray], np.ndarray]:
    """Multi-class: return ``f(offsets) -> predicted class indices`` for a rule.

    Everything that does not depend on the offsets is computed once here, so an Optuna objective
    costs one multiply-add and one argmax per trial. Decision.predict uses the same function, so the
    tuned and the saved decision agree bit for bit.
    """
    if rule in ("argmax", "prior_argmax"):
        lp = np.asarray(log_probs, dtype=np.float32)
        return lambda offsets: np.argmax(lp + np.asarray(offsets, dtype=np.float32), axis=1)
    if rule not in ("bayes", "bayes_offsets"):
        raise ValueError(f"rule {rule!r} is not a multi-class rule")
    probs = np.exp(np.asarray(log_probs, dtype=np.float64)).astype(np.float32)
    pi = np.clip(np.asarray(target_prior, dtype=np.float64), _TINY, None)
    scale = weights.a + weights.b + weights.w
    bias = (-weights.b / pi).astype(np.float32)
    # ((a+b+w)·p_k·e^{o_k} − b) / π_k  ==  p_k·u_k + v_k
    return lambda offsets: np.argmax(
        probs * (scale * np.exp(np.asarray(offsets, dtype=np.float64)) / pi).astype(np.float32) + bias, axis=1
    )


def fit_thresholds(probs: np.ndarray, labels: np.ndarray, method: str, weights: MetricConfig) -> np.ndarray:
    """(C,) per-class thresholds (predict positive where p >= t) fitted on labelled probabilities.

    youden: max TPR − FPR on the ROC curve; f1: max F1; cost: max a·TP − b·FP − w·FN on these data
    (for calibrated p its expectation is maximized at b/(a+b+w)). A class with no positive or no
    negative example gets the closed-form cost threshold, since the data say nothing about it.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method {method!r}; use one of {THRESHOLD_METHODS}")
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    default = weights.b / (weights.a + weights.b + weights.w)
    out = np.full(probs.shape[1], default)
    for c in range(probs.shape[1]):
        y, p = labels[:, c], probs[:, c]
        if not 0 < y.sum() < len(y):
            continue
        if method == "youden":
            fpr, tpr, thr = roc_curve(y, p)
            out[c] = min(float(thr[np.argmax(tpr - fpr)]), float(np.nextafter(p.max(), np.inf)))
        elif method == "f1":
            precision, recall, thr = precision_recall_curve(y, p)
            f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], _TINY, None)
            out[c] = float(thr[np.argmax(f1)])
        else:
            out[c] = _best_cost_threshold(y, p, weights)
    return out


def _best_cost_threshold(y: np.ndarray, p: np.ndarray, weights: MetricConfig) -> float:
    """Threshold maximizing a·TP − b·FP − w·FN when predicting p >= t (one sort, cumulative sums)."""
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], y[order].astype(np.int64)
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(1 - y_sorted)
    fn = y_sorted.sum() - tp
    gain = weights.a * tp - weights.b * fp - weights.w * fn
    last_of_tie = np.r_[p_sorted[1:] != p_sorted[:-1], True]  # cut only between distinct scores
    gain = np.where(last_of_tie, gain, -np.inf)
    none_gain = -weights.w * y_sorted.sum()  # predicting nothing positive
    best = int(np.argmax(gain))
    if gain[best] <= none_gain:
        return float(np.nextafter(p_sorted[0], np.inf))
    return float(p_sorted[best])


@dataclass(frozen=True, eq=False)
class Decision:
    """Everything needed to turn one model's (or a blend's) logits into predictions; saved as JSON."""

    task: str
    classes: tuple[str, ...]
    rule: str
    temperature: float
    train_prior: np.ndarray  # (C,) distribution the model was trained under
    target_prior: np.ndarray  # (C,) the true class distribution (π)
    offsets: np.ndarray  # (C,) added to calibrated log-probabilities before the rule
    thresholds: np.ndarray | None  # (C,) multi-label only
    weights: MetricConfig

    def log_probs(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated log-probabilities (temperature and prior correction, before offsets)."""
        return calibrated_log_probs(logits, self.temperature, self.train_prior, self.target_prior, self.task)

    def predict_indices(self, logits: np.ndarray) -> np.ndarray:
        """Multi-class: (n,) predicted class index."""
        if self.task != "multi-class":
            raise ValueError("predict_indices is for multi-class decisions; use predict")
        return rule_predictor(self.log_probs(logits), self.rule, self.target_prior, self.weights)(self.offsets)

    def predict(self, logits: np.ndarray) -> np.ndarray:
        """(n, C) uint8 indicator: one-hot for multi-class, thresholded for multi-label."""
        c = len(self.classes)
        if self.task == "multi-label":
            return (np.exp(self.log_probs(logits)) >= self.thresholds).astype(np.uint8)
        return np.eye(c, dtype=np.uint8)[self.predict_indices(logits)]

    def with_(self, **changes) -> Decision:
        """A copy with some fields replaced (e.g. tuned offsets)."""
        return Decision(**{**self.__dict__, **changes})

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "classes": list(self.classes),
            "rule": self.rule,
            "temperature": float(self.temperature),
            "train_prior": np.asarray(self.train_prior, dtype=float).tolist(),
            "target_prior": np.asarray(self.target_prior, dtype=float).tolist(),
            "offsets": np.asarray(self.offsets, dtype=float).tolist(),
            "thresholds": None if self.thresholds is None else np.asarray(self.thresholds, dtype=float).tolist(),
            "weights": self.weights.model_dump(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Decision:
        missing = [k for k in cls.__dataclass_fields__ if k not in d]
        if missing:
            raise ValueError(f"missing keys {missing}")
        if d["rule"] not in RULES:
            raise ValueError(f"unknown rule {d['rule']!r}; expected one of {RULES}")
        c = len(d["classes"])
        arrays = {k: np.asarray(d[k], dtype=np.float64) for k in ("train_prior", "target_prior", "offsets")}
        for name, arr in arrays.items():
            if arr.shape != (c,):
                raise ValueError(f"{name} has {arr.size} values for {c} classes")
        thresholds = None if d["thresholds"] is None else np.asarray(d["thresholds"], dtype=np.float64)
        if d["task"] == "multi-label" and (thresholds is None or thresholds.shape != (c,)):
            raise ValueError(f"a multi-label decision needs {c} thresholds")
        return cls(
            task=d["task"],
            classes=tuple(d["classes"]),
            rule=d["rule"],
            temperature=float(d["temperature"]),
            thresholds=thresholds,
            weights=MetricConfig(**d["weights"]),
            **arrays,
        )

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Decision:
        path = Path(path)
        if not path.is_file():
            raise KitError(f"{path}: decision file not found; run `kit calibrate` first")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError) as exc:
            raise KitError(f"{path}: not a valid decision file ({exc}); rerun `kit calibrate`") from None


def closed_form_decision(
    task: str,
    classes,
    train_prior: np.ndarray,
    target_prior: np.ndarray,
    weights: MetricConfig,
    temperature: float = 1.0,
) -> Decision:
    """The metric's Bayes-optimal decision for calibrated probabilities, with nothing tuned.

    Multi-class: prior correction then argmax_k ((a+b+w)·p_k − b)/π_k. Multi-label: p >= b/(a+b+w).
    """
    c = len(classes)
    multi_label = task == "multi-label"
    return Decision(
        task=task,
        classes=tuple(str(x) for x in classes),
        rule="thresholds" if multi_label else "bayes",
        temperature=float(temperature),
        train_prior=np.asarray(train_prior, dtype=np.float64),
        target_prior=np.asarray(target_prior, dtype=np.float64),
        offsets=np.zeros(c),
        thresholds=np.full(c, weights.b / (weights.a + weights.b + weights.w)) if multi_label else None,
        weights=weights,
    )
