"""Stacking: a level-2 logistic regression on the members' calibrated log-probabilities (the weighting "stack").

Where the other weightings pool the members log-linearly with one weight each, the stacker learns a weight per
(member, class, output class): multi-class, one multinomial logistic regression on the concatenated calibrated
log-probabilities of all members; multi-label, one binary logistic regression per class on the members'
calibrated log-odds of that class. It is fitted on the fitting rows only (inside nested CV: the outer fold's
training part), its L2 strength C chosen from `blend.stack_cs` by the log-loss of an inner stratified K-fold on
those rows (on at most `blend.stack_max_inner_rows` of them, drawn with a fixed seed: the C grid is what a large
fit would spend its time on), then refitted on all fitting rows at the chosen C. Its output (log-probabilities,
or log-odds per class) is the mixture the blend's decision rules are fitted on, like any weighting's.

`blend.stack_class_weight = "balanced"` weighs the classes equally in the fit (and in the inner log-loss); the
stacker then predicts under a flat prior, which it reports as its `output_prior` so that the rules' prior
correction undoes it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from kit.config import BlendConfig

STACK = "stack"
MAX_ITER = 500
_FLOOR = -30.0  # log-probabilities below e^-30 carry no information the fit can use, only bad conditioning


@dataclass(frozen=True, eq=False)
class Stacker:
    """The fitted level-2 model(s): one multinomial regression (multi-class) or one per class (multi-label)."""

    task: str
    models: tuple[Pipeline, ...]  # StandardScaler then LogisticRegression
    chosen_c: tuple[float, ...]  # per model
    inner_log_loss: tuple[dict[float, float], ...]  # per model: mean inner-CV log-loss per C (empty: too few rows)
    output_prior: np.ndarray  # (C,) the class distribution its output is calibrated to

    def combine(self, zs: list[np.ndarray]) -> np.ndarray:
        """(n, C) float32: log-probabilities (multi-class) or log-odds per class (multi-label) of the members' terms."""
        if self.task == "multi-label":
            return np.stack([m.decision_function(_features(zs, c)) for c, m in enumerate(self.models)], axis=1).astype(np.float32)
        scores = self.models[0].decision_function(_features(zs))
        if scores.ndim == 1:  # two classes: scikit-learn's binary regression gives the second class's log-odds
            scores = np.stack([np.zeros_like(scores), scores], axis=1)
        return log_softmax(scores, axis=1).astype(np.float32)

    def describe(self) -> dict:
        """What the provenance JSON records: the chosen C per model, the class weighting and the inner-CV curve."""
        return {"chosen_c": list(self.chosen_c), "class_weight": self.models[0][-1].class_weight or "none",
                "inner_log_loss": [{f"{c:g}": v for c, v in curve.items()} for curve in self.inner_log_loss]}


def fit_stacker(zs: list[np.ndarray], labels: np.ndarray, task: str, settings: BlendConfig, seed: int = 0) -> Stacker:
    """Fit the stacker on these rows only: C by inner CV (log-loss), then the refit at that C on all of them.

    One BLAS thread: the level-2 problem is small (n × M·C), and on the 2-core machine under load a 1,000-row
    fit took 0.10-0.14 s on one thread against 0.7-1.5 s on two (threads spinning for cores that are busy)."""
    with threadpool_limits(1):
        return _fit_stacker(zs, labels, task, settings, seed)


def _fit_stacker(zs: list[np.ndarray], labels: np.ndarray, task: str, settings: BlendConfig, seed: int) -> Stacker:
    class_weight = "balanced" if settings.stack_class_weight == "balanced" else None
    labels = np.asarray(labels)
    if task == "multi-label":
        targets = [(labels[:, c], _features(zs, c)) for c in range(labels.shape[1])]
        prior = np.full(labels.shape[1], 0.5) if class_weight else np.clip(labels.mean(axis=0), 1e-12, 1 - 1e-12)
    else:
        targets = [(labels.argmax(axis=1), _features(zs))]
        prior = np.full(labels.shape[1], 1.0 / labels.shape[1]) if class_weight else np.clip(labels.mean(axis=0), 1e-12, None)
    models, chosen, curves = [], [], []
    for y, x in targets:
        curve = _inner_curve(x, y, settings, class_weight, seed)
        c = min(curve, key=lambda k: (curve[k], k)) if curve else _middle(settings.stack_cs)
        models.append(_fit(x, y, c, class_weight))
        chosen.append(float(c))
        curves.append(curve)
    return Stacker(task, tuple(models), tuple(chosen), tuple(curves), np.asarray(prior, dtype=np.float64))


def _features(zs: list[np.ndarray], column: int | None = None) -> np.ndarray:
    """(n, M·C) the members' terms side by side (multi-class), or (n, M) their column `column` (multi-label)."""
    parts = [np.asarray(z, dtype=np.float64) if column is None else np.asarray(z, dtype=np.float64)[:, [column]] for z in zs]
    x = np.concatenate(parts, axis=1)
    return np.clip(x, _FLOOR, -_FLOOR)


def _fit(x: np.ndarray, y: np.ndarray, c: float, class_weight: str | None, warm: Pipeline | None = None) -> Pipeline:
    """Standardized features, then the regression (standardizing cut lbfgs from 500+ iterations, unconverged, to
    about 60-80 on the demo-sized stack: 3.6 s to 0.7 s a fit)."""
    model = warm if warm is not None else make_pipeline(
        StandardScaler(), LogisticRegression(C=c, class_weight=class_weight, max_iter=MAX_ITER, warm_start=True))
    model.set_params(logisticregression__C=c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the inner CV judges the fit; a near-converged one is fine
        return model.fit(x, y)


def _inner_curve(x: np.ndarray, y: np.ndarray, settings: BlendConfig, class_weight: str | None, seed: int) -> dict[float, float]:
    """Mean held-out log-loss per C over a stratified inner K-fold of (at most `stack_max_inner_rows` of) these rows,
    each fold's fits warm-started along the grid from the strongest regularisation. A multi-class class rarer than
    the inner folds is simply absent from some parts; {} for a binary target with fewer positives (or negatives)
    than inner folds (the C grid's middle value is used then)."""
    rows = np.arange(len(y))
    if len(rows) > settings.stack_max_inner_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, settings.stack_max_inner_rows, replace=False))
    x, y = x[rows], y[rows]
    k = settings.stack_inner_folds
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or (len(classes) == 2 and counts.min() < k):
        return {}
    losses: dict[float, list[float]] = {float(c): [] for c in settings.stack_cs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the least populated class has only N members": expected for the tail
        splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y))
    for train, held in splits:
        model = None
        for c in sorted(losses):
            model = _fit(x[train], y[train], c, class_weight, model)
            proba = _proba(model, x[held], classes)
            weight = compute_sample_weight("balanced", y[held]) if class_weight else None
            losses[c].append(log_loss(y[held], proba, labels=classes, sample_weight=weight))
    return {c: float(np.mean(v)) for c, v in losses.items()}


def _proba(model: Pipeline, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """predict_proba with a column for every class (an inner training part may lack a rare one)."""
    out = np.full((len(x), len(classes)), 1e-15)
    out[:, np.searchsorted(classes, model.classes_)] = model.predict_proba(x)
    return out / out.sum(axis=1, keepdims=True)


def _middle(values: list[float]) -> float:
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2])
