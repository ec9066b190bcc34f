"""The decision layer's fits as Optuna studies, through Optuna's public API only, for `kit dashboard`.

One study per target (`calibrate/<variant>`, `blend/<name>`): one trial per (candidate, outer fold) with
the fitted parameters (temperature, α, offsets or thresholds) as params and the held-out score as the
value, plus one trial per candidate refitted on all folds (user attribute fold = "all", value = the
candidate's nested-CV mean). A re-run replaces the study, so the storage shows the latest run; the
stages hold `kit.studies.exclusive_studies` while they do, so two runs never interleave.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution

from kit.decision.rules import Decision
from kit.decision.select import Selection
from kit.studies import quiet_optuna

TEMPERATURE = FloatDistribution(0.01, 100.0, log=True)
ALPHA = FloatDistribution(-10.0, 10.0)
THRESHOLD = FloatDistribution(0.0, 2.0)


def decision_params(decision: Decision) -> tuple[dict[str, float], dict[str, FloatDistribution]]:
    """A decision's fitted numbers as Optuna params with their distributions (wide, fixed bounds)."""
    params = {"temperature": float(decision.temperature), "alpha": float(decision.alpha)}
    dists = {"temperature": TEMPERATURE, "alpha": ALPHA}
    if decision.offsets is not None and decision.rule == "offsets":
        bound = max(1.0, float(np.abs(decision.offsets).max()))
        for name, value in zip(decision.classes, decision.offsets):
            params[f"offset[{name}]"] = float(value)
            dists[f"offset[{name}]"] = FloatDistribution(-bound, bound)
    if decision.thresholds is not None and decision.rule == "thresholds":
        for name, value in zip(decision.classes, decision.thresholds):
            params[f"threshold[{name}]"] = float(value)
            dists[f"threshold[{name}]"] = THRESHOLD
    return params, dists


def fit_trial(decision: Decision, value: float, **user_attrs: Any) -> optuna.trial.FrozenTrial:
    params, dists = decision_params(decision)
    return optuna.trial.create_trial(params=params, distributions=dists, value=float(value), user_attrs=user_attrs)


def write_study(storage: str | optuna.storages.BaseStorage, study_name: str, trials: list[optuna.trial.FrozenTrial], user_attrs: dict[str, Any]) -> None:
    """Replace `study_name` in `storage` by a study holding `trials` (Optuna's public API only)."""
    with quiet_optuna():
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=study_name, storage=storage)
        study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize")
        for key, value in user_attrs.items():
            study.set_user_attr(key, value)
        study.add_trials(trials)


def selection_trials(selection: Selection) -> list[optuna.trial.FrozenTrial]:
    """One trial per (candidate, outer fold) valued by its held-out score, and one per candidate refitted on all folds."""
    trials = []
    for i, (k, fitted) in enumerate(selection.per_fold.items()):  # per_fold and the scores follow the same fold order
        for name, decision in fitted.items():
            trials.append(fit_trial(decision, selection.scores[name].per_fold[i], candidate=name, fold=str(k)))
    for name, decision in selection.final.items():
        trials.append(fit_trial(decision, selection.scores[name].mean, candidate=name, fold="all", in_sample=selection.in_sample[name],
                                chosen=name == selection.choice.chosen))
    return trials

