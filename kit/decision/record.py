"""The decision layer's choices as Optuna studies that read true, through Optuna's public API only.

One study per target (`calibrate/<variant>`, `blend/<name>`), objective named "nested-CV score":
- one trial per candidate (blend: per weighting × rule), whose value is its nested-CV mean, so the
  study's best trial is the best candidate by nested CV — never one fold's or an in-sample number;
- the held-out score of each outer fold as the trial's intermediate values (step = fold), so the
  dashboard's intermediate-value plot shows the fold spread the standard error comes from;
- the standard error, the in-sample score of the refit, the fitted temperature and α per fold and
  `chosen` (the kit's pick: the simplest within one paired SE of the best) as user attributes;
  exactly one trial has chosen = True.
The only param is the candidate (categorical), since that is what the nested CV compares; the fitted
numbers (temperature, α, offsets, thresholds) are attributes, never params of trials that did not sample them.

The offsets searches (kit.decision.search) get their own studies, `<target>/offsets/fold<k>/from_<start>`
and `<target>/offsets/all/from_<start>`, holding every proposal the search scored, valued in-sample on
the rows it searched (its nested score is the parent study's). A re-run replaces the studies, so the storage shows the latest run; the stages hold
`kit.studies.exclusive_studies` while they write.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution

from kit.decision.names import display_name
from kit.decision.nested import Choice, NestedScore
from kit.decision.rules import Decision
from kit.decision.select import Selection
from kit.studies import quiet_optuna

METRIC_NAME = "nested-CV score"
SEARCH_METRIC_NAME = "in-sample score (fitting folds)"


def write_study(storage: str | optuna.storages.BaseStorage, study_name: str, trials: list[optuna.trial.FrozenTrial],
                user_attrs: dict[str, Any], metric_name: str = METRIC_NAME, direction: str = "maximize") -> None:
    """Replace `study_name` in `storage` by a study holding `trials`, its objective named `metric_name`, in the
    metric's `direction` ("minimize" for log-loss: the study's best trial is then the lowest)."""
    with quiet_optuna():
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=study_name, storage=storage)
        study = optuna.create_study(storage=storage, study_name=study_name, direction=direction)
        with warnings.catch_warnings():  # experimental in Optuna 5, and the dashboard reads it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric_name])
        for key, value in user_attrs.items():
            study.set_user_attr(key, value)
        study.add_trials(trials)


def fitted_attrs(decision: Decision, prefix: str = "") -> dict[str, Any]:
    """A decision's fitted numbers as JSON user attributes (temperature, α, offsets or thresholds by class)."""
    attrs: dict[str, Any] = {f"{prefix}temperature": round(float(decision.temperature), 6), f"{prefix}alpha": round(float(decision.alpha), 6)}
    if decision.offsets is not None and decision.rule == "offsets":
        attrs[f"{prefix}offsets"] = {c: round(float(o), 6) for c, o in zip(decision.classes, decision.offsets)}
    if decision.thresholds is not None and decision.rule == "thresholds":
        attrs[f"{prefix}thresholds"] = {c: round(float(t), 6) for c, t in zip(decision.classes, decision.thresholds)}
    return attrs


def score_trial(params: dict[str, str], dists: dict[str, CategoricalDistribution], score: NestedScore, folds: list[int], choice: Choice,
                key: str, **user_attrs: Any) -> optuna.trial.FrozenTrial:
    """One compared option: value = nested-CV mean, intermediate values = held-out score per fold."""
    attrs = {"se": score.se, "chosen": key == choice.chosen, "best": key == choice.best,
             "delta_to_best": choice.delta.get(key), "delta_se": choice.delta_se.get(key), **user_attrs}
    return optuna.trial.create_trial(
        params=params, distributions=dists, value=score.mean, user_attrs={k: v for k, v in attrs.items() if v is not None},
        intermediate_values={int(k): float(v) for k, v in zip(folds, score.per_fold)},
    )


def selection_trials(selection: Selection, labels: dict[str, str] | None = None) -> list[optuna.trial.FrozenTrial]:
    """One trial per candidate (simplest first): its nested CV, per-fold scores and fits, in-sample score, the choice."""
    labels = labels or {}
    names = [c.name for c in selection.candidates]
    dists = {"candidate": CategoricalDistribution(names)}
    folds = list(selection.per_fold)
    trials = []
    for name in names:
        per_fold = {}
        for k, fitted in selection.per_fold.items():
            per_fold.update(fitted_attrs(fitted[name], prefix=f"fold{k}."))
        trials.append(score_trial(
            {"candidate": name}, dists, selection.scores[name], folds, selection.choice, name,
            candidate=name, label=labels.get(name, display_name(name)), in_sample=selection.in_sample[name],
            **fitted_attrs(selection.final[name], prefix="refit."), **per_fold,
        ))
    return trials


def study_summary(choice: Choice, trivial: NestedScore, **extra: Any) -> dict[str, Any]:
    """The study's own attributes: what was chosen, how, and the trivial baseline it stands beside."""
    return {"chosen": choice.chosen, "best": choice.best, "selection": choice.rule,
            "trivial_baseline": trivial.mean, "trivial_baseline_se": trivial.se, **extra}



def search_studies(selection: Selection) -> dict[str, tuple[list[optuna.trial.FrozenTrial], dict[str, Any]]]:
    """The offsets searches of a selection, one study each: `offsets/fold<k>/from_<start>` for the outer folds'
    fits, `offsets/all/from_<start>` for the refit; each holds every proposal the search scored."""
    fits = {f"fold{k}": fitted.get("offsets") for k, fitted in selection.per_fold.items()}
    fits["all"] = selection.final.get("offsets")
    studies = {}
    for where, decision in fits.items():
        if decision is None:
            continue
        for start, trials in decision.extra.get("_search_trials", {}).items():
            attrs = {"search": decision.extra.get("search"), "fitted_on": where, "start": start, "kept": start == decision.extra.get("start"),
                     "objective": "in-sample score on the fitting rows (the nested CV scores the result on the held-out fold)"}
            studies[f"offsets/{where}/from_{start}"] = (trials, attrs)
    return studies


def write_search_studies(storage: str | optuna.storages.BaseStorage, prefix: str,
                         studies: dict[str, tuple[list[optuna.trial.FrozenTrial], dict[str, Any]]]) -> list[str]:
    """Replace every study named `<prefix>/...` by `studies` (so a run without searches leaves none stale); their names."""
    with quiet_optuna():
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            if summary.study_name.startswith(prefix + "/") and summary.study_name.removeprefix(prefix + "/") not in studies:
                optuna.delete_study(study_name=summary.study_name, storage=storage)
    for suffix, (trials, attrs) in studies.items():
        write_study(storage, f"{prefix}/{suffix}", trials, attrs, metric_name=SEARCH_METRIC_NAME)
    return [f"{prefix}/{suffix}" for suffix in studies]
