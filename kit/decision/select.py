"""Choose a decision for one target (a variant's OOF, or any labelled logits): every candidate scored by
nested CV, the simplest within one paired SE of the best kept, and refitted on all folds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kit.decision.candidates import Candidate, FitContext, fit_all
from kit.decision.nested import Choice, NestedScore, choose, nested_cv
from kit.decision.rules import Decision
from kit.errors import KitError


@dataclass(frozen=True)
class Selection:
    candidates: list[Candidate]
    scores: dict[str, NestedScore]  # nested CV per candidate
    choice: Choice
    final: dict[str, Decision]  # every candidate refitted on all folds
    in_sample: dict[str, float]  # each refit scored on the rows it was fitted on
    per_fold: dict[int, dict[str, Decision]] = field(default_factory=dict)  # what each outer fold fitted

    @property
    def decision(self) -> Decision:
        return self.final[self.choice.chosen]


def select_decision(
    logits: np.ndarray,
    labels: np.ndarray,
    fold: np.ndarray,
    context: FitContext,
    candidates: list[Candidate],
    on_fit: Callable[[], None] | None = None,
) -> Selection:
    """Nested CV of `candidates` (listed simplest first), the one-SE choice, and the refits on all rows."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.uint8)
    metric = context.metric
    per_fold: dict[int, dict[str, Decision]] = {}

    def fit_rows(rows: np.ndarray) -> dict[str, Decision]:
        fitted = fit_all(candidates, logits[rows], labels[rows], context)
        if on_fit is not None:
            on_fit()
        return fitted

    def evaluate(fitted: dict[str, Decision], held: np.ndarray) -> dict[str, float]:
        return {name: metric.score(labels[held], d.predict(logits[held])) for name, d in fitted.items()}

    scores = nested_cv(fit_rows, evaluate, fold, on_fold=lambda k, fitted: per_fold.__setitem__(k, fitted))
    choice = choose(scores, [c.name for c in candidates], context.settings.selection, metric.direction)
    final = fit_rows(np.ones(len(labels), dtype=bool))
    in_sample = {name: metric.score(labels, d.predict(logits)) for name, d in final.items()}
    return Selection(candidates, scores, choice, final, in_sample, per_fold)


def check_nested_inputs(logits: np.ndarray, labels: np.ndarray, fold: np.ndarray, classes: list[str], task: str, source: str) -> None:
    """KitError naming `source` unless nested CV is defined: matching shapes, finite logits, one label per
    row for multi-class, at least two folds, and every class present in every held-out fold."""
    n, c = logits.shape
    if labels.shape != (n, c):
        raise KitError(f"{source}: labels have shape {labels.shape} but logits {logits.shape}; the OOF and the data disagree")
    if fold.shape != (n,):
        raise KitError(f"{source}: fold has shape {fold.shape}, expected ({n},)")
    if not np.isfinite(logits).all():
        raise KitError(f"{source}: logits contain NaN or infinite values; retrain that variant")
    if task == "multi-class":
        bad = np.flatnonzero(labels.sum(axis=1) != 1)
        if bad.size:
            raise KitError(f"{source}: {bad.size} label rows do not have exactly one class (first row {int(bad[0])}); check the task")
    folds = np.unique(fold)
    if folds.size < 2:
        raise KitError(f"{source}: nested CV needs at least 2 folds, found {folds.size}; run `kit folds` with n_folds >= 2")
    for k in folds.tolist():
        present = labels[fold == k].sum(axis=0) > 0
        if not present.all():
            missing = [classes[j] for j in np.flatnonzero(~present)]
            also = f" (also {', '.join(missing[1:4])}{'…' if len(missing) > 4 else ''})" if len(missing) > 1 else ""
            raise KitError(
                f"{source}: class '{missing[0]}' has no image in the held-out set of fold {k}{also}; "
                "its per-fold score is undefined: use fewer folds (folds.n_folds) or more data"
            )
