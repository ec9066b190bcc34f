"""One nested cross-validation, and the one-standard-error choice between candidates.

Every score the kit reports for something it fitted (a temperature, offsets, blend weights, a rule) is
measured on rows it was not fitted on: for each fold k, fit on the other folds and score fold k. The
OOF logits are themselves out-of-fold, so each row is scored by a model and a decision that never saw it.

Choosing among candidates by the best nested mean still favours the lucky one; the kit keeps the
simplest candidate whose mean is within one standard error of the best, where the standard error is
that of the per-fold *difference* to the best (the candidates are scored on the same folds, so the
paired difference is what fold-to-fold noise leaves uncertain).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

M = TypeVar("M")
K = TypeVar("K", bound=Hashable)  # a candidate's key: its name (calibrate) or a (weighting, rule) pair (blend)


@dataclass(frozen=True)
class NestedScore:
    """A candidate's held-out score per fold, and their mean and standard error."""

    per_fold: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_fold))

    @property
    def se(self) -> float:
        return standard_error(self.per_fold)


def standard_error(values: Sequence[float]) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def nested_cv(
    fit: Callable[[np.ndarray], M],
    evaluate: Callable[[M, np.ndarray], dict[K, float]],
    fold: np.ndarray,
    on_fold: Callable[[int, M], None] | None = None,
) -> dict[K, NestedScore]:
    """For each fold k: `model = fit(rows not in k)`, `evaluate(model, rows in k)` -> {key: score}.

    `fit` may return several fitted candidates at once (a dict) so that work they share is done once;
    `on_fold(k, model)` sees each fold's fit (progress, reports). Returns a NestedScore per key.
    """
    fold = np.asarray(fold)
    per_key: dict[K, list[float]] = {}
    for k in np.unique(fold).tolist():
        held = fold == k
        model = fit(~held)
        if on_fold is not None:
            on_fold(int(k), model)
        for key, value in evaluate(model, held).items():
            per_key.setdefault(key, []).append(float(value))
    return {key: NestedScore(tuple(values)) for key, values in per_key.items()}


@dataclass(frozen=True)
class Choice:
    """The chosen key, the best key, and each key's difference to the best with its paired SE."""

    chosen: Hashable
    best: Hashable
    delta: dict[Hashable, float]
    delta_se: dict[Hashable, float]
    rule: str  # how the choice was made, in words


def choose(scores: dict[K, NestedScore], simplicity: list[K], selection: str = "one_se", direction: str = "maximize") -> Choice:
    """The simplest key (order of `simplicity`) within one paired SE of the best mean; "best": the best.

    `direction` is the metric's ("minimize" for log-loss: the best is the lowest). Ties of the mean go to
    the simpler key in both modes. Differences are reported as score − best's score, in the metric's units."""
    sign = 1.0 if direction == "maximize" else -1.0
    order = {key: i for i, key in enumerate(simplicity)}
    keys = sorted(scores, key=lambda key: order.get(key, len(order)))
    best = max(keys, key=lambda key: (sign * scores[key].mean, -order.get(key, len(order))))
    delta, delta_se = {}, {}
    for key in keys:
        diff = np.asarray(scores[key].per_fold) - np.asarray(scores[best].per_fold)
        delta[key] = float(diff.mean())
        delta_se[key] = standard_error(diff) if key != best else 0.0
    if selection == "best":
        return Choice(best, best, delta, delta_se, "best nested-CV mean (ties: the simpler)")
    within = [key for key in keys if sign * delta[key] >= -(delta_se[key] if np.isfinite(delta_se[key]) else 0.0)]
    return Choice(within[0], best, delta, delta_se, "simplest within one paired SE of the best")


def as_report(
    scores: dict[K, NestedScore], choice: Choice, labels: dict[K, str] | None = None, name: Callable[[K], str] = str,
) -> list[dict[str, Any]]:
    """Rows for JSON reports: key (written by `name`), label, nested mean, SE, per-fold scores, difference to the best."""
    labels = labels or {}
    return [
        {"key": name(key), "label": labels.get(key, name(key)), "nested_cv": s.mean, "se": s.se, "per_fold": list(s.per_fold),
         "delta_to_best": choice.delta.get(key), "delta_se": choice.delta_se.get(key), "chosen": key == choice.chosen}
        for key, s in scores.items()
    ]
