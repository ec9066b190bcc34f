"""A decision: everything that turns one model's (or a blend's) logits into predictions, saved as JSON.

Multi-class, with p the calibrated probabilities (kit.decision.calibration) and o per-class offsets:
- argmax-type rules predict ``argmax_k log p_k + o_k``;
- Bayes-type rules predict ``argmax_k u_k·p_k·e^{o_k} + v_k`` with (u, v) the metric's Bayes weights for
  the target prior (for the competition's metric ``((a+b+w)·p_k − b)/π_k``, docs/decision.md).
Multi-label: predict label c where ``p_c >= t_c``. Ordinal grades (kappa): with cut points c, predict the
number of cuts below the expected grade ``Σ_k k·p_k`` (the optimised rounder).
Zero offsets give the closed-form rule; the candidates module fits T, α, offsets, thresholds, cuts and biases.

What `predict` returns is what the metric scores: indicators for a label metric; for a probability or ranking
metric (log-loss, AUC, mAP), the calibrated probabilities ``softmax(z + b)`` (``sigmoid`` for multi-label)
with z the calibrated logits and b an optional per-class bias fitted by NLL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from sklearn.metrics import roc_curve

from kit.config import MetricConfig
from kit.decision.calibration import Calibrator, log_probs
from kit.decision.metrics import MacroF1, Metric, build_metric
from kit.errors import KitError
from kit.files import write_json

TASKS = ("multi-class", "multi-label")
THRESHOLD_METHODS = ("metric", "youden", "f1")


def decide_indices(lp: np.ndarray, offsets: np.ndarray, bayes_weights: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """(n,) predicted class per row of (n, C) calibrated log-probabilities (float32 inner loop).

    Without Bayes weights: argmax(lp + offsets). With (u, v): argmax(u·p·e^offsets + v). The same
    function serves the searches and `Decision.predict`, so a tuned and a saved decision agree bit for bit.
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    if bayes_weights is None:
        return np.argmax(np.asarray(lp, dtype=np.float32) + offsets.astype(np.float32), axis=1)
    u, v = bayes_weights
    p = np.exp(np.asarray(lp, dtype=np.float64)).astype(np.float32)
    return np.argmax(p * (np.asarray(u) * np.exp(offsets)).astype(np.float32) + np.asarray(v, dtype=np.float32), axis=1)


@dataclass(frozen=True, eq=False)
class Decision:
    """One fitted decision rule on top of a fitted calibrator; `predict(logits)` gives the (n, C) uint8
    indicator to submit. The metric is held as an object and written as its params only by `to_dict`."""

    classes: tuple[str, ...]
    rule: str  # the candidate that produced it (kit.decision.candidates)
    calibrator: Calibrator
    metric: Metric
    bayes: bool = False  # multi-class: decide by the metric's Bayes weights instead of argmax
    offsets: np.ndarray | None = None  # (C,) multi-class offsets on log-probabilities
    thresholds: np.ndarray | None = None  # (C,) multi-label thresholds on probabilities
    cuts: np.ndarray | None = None  # (C-1,) ordinal cut points on the expected grade (kappa's optimised rounder)
    bias: np.ndarray | None = None  # (C,) per-class bias on the calibrated logits (probability metrics), fitted by NLL
    fitted_on: str | None = None  # fingerprint of the OOF it was fitted on (kit.artifacts.oof_fingerprint)
    extra: dict = field(default_factory=dict)  # what the fit chose beyond the fields (e.g. the search's start); '_' keys are not saved

    @property
    def task(self) -> str:
        return self.calibrator.task

    @property
    def temperature(self) -> float:
        return self.calibrator.temperature

    @property
    def alpha(self) -> float:
        return self.calibrator.alpha

    @property
    def target_prior(self) -> np.ndarray:
        return self.calibrator.target_prior

    def log_probs(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated log-probabilities: temperature, α-scaled prior correction and the bias, before offsets."""
        if self.bias is None:
            return self.calibrator.log_probs(logits)
        return log_probs(self.calibrator.logits(logits) + self.bias, self.task)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(n, C) float64 calibrated probabilities: what a probability or ranking metric scores."""
        return np.exp(self.log_probs(logits))

    def predict_indices(self, logits: np.ndarray) -> np.ndarray:
        """Multi-class: (n,) predicted class index."""
        if self.task != "multi-class":
            raise ValueError("predict_indices is for multi-class decisions; use predict")
        if self.cuts is not None:
            return grades_from_cuts(self.probabilities(logits), self.cuts)
        weights = self.metric.bayes_weights(self.target_prior) if self.bayes else None
        offsets = np.zeros(len(self.classes)) if self.offsets is None else self.offsets
        return decide_indices(self.log_probs(logits), offsets, weights)

    def predict(self, logits: np.ndarray) -> np.ndarray:
        """What the metric scores: (n, C) uint8 indicator (one-hot for multi-class, thresholded for multi-label)
        for a label metric, the calibrated probabilities for a probability or ranking metric."""
        if self.metric.kind != "label":
            return self.probabilities(logits)
        if self.task == "multi-label":
            return (np.exp(self.log_probs(logits)) >= self.thresholds).astype(np.uint8)
        return np.eye(len(self.classes), dtype=np.uint8)[self.predict_indices(logits)]

    def with_(self, **changes) -> Decision:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """The decision.json layout (docs/files.md): the calibrator's fields beside the rule's, flat."""
        def floats(a):
            return None if a is None else np.asarray(a, dtype=float).tolist()

        cal = self.calibrator
        return {
            "task": self.task, "classes": list(self.classes), "rule": self.rule, "temperature": float(cal.temperature),
            "alpha": float(cal.alpha), "train_prior": floats(cal.train_prior), "target_prior": floats(cal.target_prior),
            "metric": self.metric.params(), "bayes": bool(self.bayes), "offsets": floats(self.offsets),
            "thresholds": floats(self.thresholds),
            **({"cuts": floats(self.cuts)} if self.cuts is not None else {}), **({"bias": floats(self.bias)} if self.bias is not None else {}),
            "fitted_on": self.fitted_on,
            "extra": {k: v for k, v in self.extra.items() if not k.startswith("_")},  # "_" keys stay in memory (search trials)
        }

    @classmethod
    def from_dict(cls, d: dict) -> Decision:
        """Validated: shapes, finite values, T > 0, priors > 0, thresholds in [0, 1], a known metric."""
        required = ("task", "classes", "rule", "temperature", "alpha", "train_prior", "target_prior", "metric")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"missing keys {missing}")
        if d["task"] not in TASKS:
            raise ValueError(f"task {d['task']!r} is not one of {TASKS}")
        classes = tuple(str(c) for c in d["classes"])
        c = len(classes)
        if c == 0 or len(set(classes)) != c:
            raise ValueError("classes must be a non-empty list of distinct names")
        temperature, alpha = float(d["temperature"]), float(d["alpha"])
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {d['temperature']!r}")
        if not np.isfinite(alpha):
            raise ValueError(f"alpha must be finite, got {d['alpha']!r}")
        arrays = {key: _class_array(d, key, c) for key in ("train_prior", "target_prior", "offsets", "thresholds", "bias")}
        arrays["cuts"] = _class_array(d, "cuts", c - 1)
        if arrays["cuts"] is not None and (np.diff(arrays["cuts"]) < 0).any():
            raise ValueError("cuts must be in increasing order")
        for key in ("train_prior", "target_prior"):
            if arrays[key] is None or (arrays[key] <= 0).any():
                raise ValueError(f"{key} must be positive for every class")
        if d["task"] == "multi-label":
            t = arrays["thresholds"]
            if t is None or (t < 0).any() or (t > 1 + 1e-6).any():
                raise ValueError(f"a multi-label decision needs {c} thresholds in [0, 1]")
        try:
            metric = build_metric(MetricConfig.model_validate(d["metric"]))  # a known metric with valid weights
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"metric {'.'.join(map(str, first['loc'])) or ''}: {first['msg']}") from None
        calibrator = Calibrator(d["task"], temperature, alpha, arrays.pop("train_prior"), arrays.pop("target_prior"))
        return cls(
            classes=classes, rule=str(d["rule"]), calibrator=calibrator, metric=metric, bayes=bool(d.get("bayes", False)),
            fitted_on=d.get("fitted_on"), extra=dict(d.get("extra") or {}), **arrays,
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
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise KitError(f"{path}: not a valid decision file ({first}); rerun `kit calibrate`") from None


def _class_array(d: dict, key: str, c: int) -> np.ndarray | None:
    """d[key] as a finite (C,) float64 array, or None when absent."""
    if d.get(key) is None:
        return None
    arr = np.asarray(d[key], dtype=np.float64)
    if arr.shape != (c,):
        raise ValueError(f"{key} has {arr.size} values for {c} classes")
    if not np.isfinite(arr).all():
        raise ValueError(f"{key} holds NaN or infinite values")
    return arr


def closed_form_decision(
    task: str, classes, train_prior: np.ndarray, target_prior: np.ndarray, metric: Metric, *, temperature: float = 1.0, alpha: float = 1.0,
) -> Decision:
    """The metric's Bayes-optimal decision for calibrated probabilities, nothing searched.

    Multi-class: prior correction then the metric's Bayes rule (argmax when the metric has none).
    Multi-label: p >= the metric's threshold (0.5 when it has none)."""
    calibrator = Calibrator(task, float(temperature), float(alpha), np.asarray(train_prior, dtype=np.float64),
                            np.asarray(target_prior, dtype=np.float64))
    return decide_calibrated(calibrator, classes, metric)


def grades_from_cuts(probs: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """(n,) grade per row: how many cut points lie below its expected grade Σ_k k·p_k (the optimised rounder)."""
    expected = np.asarray(probs, dtype=np.float64) @ np.arange(probs.shape[1], dtype=np.float64)
    return np.searchsorted(np.asarray(cuts, dtype=np.float64), expected, side="left")


def decide_calibrated(calibrator: Calibrator, classes, metric: Metric, rule: str = "closed_form") -> Decision:
    """The metric's closed-form rule on a fitted calibrator (the start every candidate refines)."""
    c = len(classes)
    multi_label = calibrator.task == "multi-label"
    threshold = metric.threshold() if metric.threshold() is not None else 0.5
    return Decision(
        classes=tuple(str(x) for x in classes), rule=rule, calibrator=calibrator, metric=metric,
        bayes=not multi_label and metric.bayes_weights(np.ones(c) / c) is not None,
        offsets=None if multi_label else np.zeros(c), thresholds=np.full(c, threshold) if multi_label else None,
    )


def fit_thresholds(probs: np.ndarray, labels: np.ndarray, method: str, metric: Metric) -> np.ndarray:
    """(C,) per-class thresholds (predict positive where p >= t) fitted on labelled probabilities.

    metric: the cut that maximizes the configured metric's per-class score on these rows; f1: the same
    for F1; youden: max TPR − FPR on the ROC curve. A class with no positive or no negative row keeps
    the metric's closed-form threshold (0.5 when it has none): the data say nothing about it.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"threshold method {method!r}; use one of {THRESHOLD_METHODS}")
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    default = metric.threshold() if metric.threshold() is not None else 0.5
    out = np.full(probs.shape[1], default)
    for c in range(probs.shape[1]):
        y, p = labels[:, c], probs[:, c]
        if not 0 < y.sum() < len(y):
            continue
        if method == "youden":
            fpr, tpr, thr = roc_curve(y, p)
            out[c] = min(float(thr[np.argmax(tpr - fpr)]), float(np.nextafter(p.max(), np.inf)))
        else:
            out[c] = best_threshold(y, p, metric if method == "metric" else MacroF1())
    return out


def best_threshold(y: np.ndarray, p: np.ndarray, metric: Metric) -> float:
    """Threshold maximizing one class's score under `metric` when predicting p >= t: one sort, cumulative
    counts, every cut scored at once; cuts only between distinct scores; ties go to fewer positives."""
    order = np.argsort(-p, kind="stable")
    p_sorted, y_sorted = p[order], np.asarray(y)[order].astype(np.int64)
    positives = int(y_sorted.sum())
    tp = np.r_[0, np.cumsum(y_sorted)]  # cut j: the top j rows predicted positive
    fp = np.r_[0, np.cumsum(1 - y_sorted)]
    value = metric.per_class_from_counts(tp, fp, positives - tp)
    value = np.where(np.isnan(value), -np.inf, value)
    allowed = np.r_[True, p_sorted[1:] != p_sorted[:-1], True]  # j = 0, and after the last of a tie
    best = int(np.argmax(np.where(allowed, value, -np.inf)))
    if best == 0:
        return float(np.nextafter(p_sorted[0], np.inf))
    return float(p_sorted[best - 1])
