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

Cost: Optuna's `Study.add_trials` writes a trial to a SQL database one row at a time (two queries and an
insert per parameter, a commit per trial): 20 offsets × ~60 proposals × 13 searches took half a minute
on the demo. On a SQL storage the trials therefore go in as one transaction of bulk inserts, the same
rows `add_trials` would write (tests/test_record.py compares them through Optuna's public reads); other
storages (a journal file: one line per trial already) take `add_trials`.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, check_distribution_compatibility, distribution_to_json
from optuna.storages import RDBStorage

from kit.decision.names import display_name
from kit.decision.nested import Choice, NestedScore
from kit.decision.rules import Decision
from kit.decision.select import Selection
from kit.studies import open_storage, quiet_optuna

METRIC_NAME = "nested-CV score"
SEARCH_METRIC_NAME = "in-sample score (fitting folds)"


def write_study(storage: str | optuna.storages.BaseStorage, study_name: str, trials: list[optuna.trial.FrozenTrial],
                user_attrs: dict[str, Any], metric_name: str = METRIC_NAME, direction: str = "maximize") -> None:
    """Replace `study_name` in `storage` by a study holding `trials`, its objective named `metric_name`, in the
    metric's `direction` ("minimize" for log-loss: the study's best trial is then the lowest)."""
    storage = open_storage(storage) if isinstance(storage, str) else storage
    with quiet_optuna():
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=study_name, storage=storage)
        study = optuna.create_study(storage=storage, study_name=study_name, direction=direction)
        with warnings.catch_warnings():  # experimental in Optuna 5, and the dashboard reads it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric_name])
        if isinstance(storage, RDBStorage):
            bulk_add_trials(storage, storage.get_study_id_from_name(study_name), trials, user_attrs)
        else:
            for key, value in user_attrs.items():
                study.set_user_attr(key, value)
            study.add_trials(trials)


def bulk_add_trials(storage: RDBStorage, study_id: int, trials: list[optuna.trial.FrozenTrial], study_attrs: dict[str, Any] | None = None) -> None:
    """What `Study.add_trials` (and `Study.set_user_attr` for `study_attrs`) store, in one transaction of a few bulk
    inserts instead of a few statements per parameter and a commit per trial: the trial rows (numbered after the
    study's existing trials), then their values, params, attributes and intermediate values, each table in one
    executemany. Optuna's schema, through its own models."""
    from optuna.storages._rdb import models
    from sqlalchemy import func, insert, orm, select

    _check_compatible(trials)
    with orm.Session(storage.engine) as session, session.begin():
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)  # as add_trials: the numbers are ours
        start = session.scalar(select(func.count()).select_from(models.TrialModel).where(models.TrialModel.study_id == study_id))
        rows = [models.TrialModel(study_id=study_id, number=start + i, state=t.state, datetime_start=t.datetime_start,
                                  datetime_complete=t.datetime_complete) for i, t in enumerate(trials)]
        session.add_all(rows)
        session.flush()  # the trial ids, in one INSERT … RETURNING
        value_repr = models.TrialValueModel.value_to_stored_repr
        step_repr = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
        tables: dict[type, list[dict]] = {models.TrialValueModel: [], models.TrialParamModel: [], models.TrialUserAttributeModel: [],
                                          models.TrialSystemAttributeModel: [], models.TrialIntermediateValueModel: [],
                                          models.StudyUserAttributeModel: [{"study_id": study_id, "key": k, "value_json": json.dumps(v)}
                                                                           for k, v in (study_attrs or {}).items()]}
        as_json: dict[int, str] = {}
        for row, t in zip(rows, trials):
            tid = row.trial_id
            for objective, value in enumerate(t.values or []):
                stored, kind = value_repr(value)
                tables[models.TrialValueModel].append({"trial_id": tid, "objective": objective, "value": stored, "value_type": kind})
            for name, value in t.params.items():
                dist = t.distributions[name]
                if id(dist) not in as_json:  # trials of one search share their distribution objects
                    as_json[id(dist)] = distribution_to_json(dist)
                tables[models.TrialParamModel].append({"trial_id": tid, "param_name": name, "param_value": dist.to_internal_repr(value),
                                                       "distribution_json": as_json[id(dist)]})
            for model, attrs in ((models.TrialUserAttributeModel, t.user_attrs), (models.TrialSystemAttributeModel, t.system_attrs)):
                tables[model].extend({"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items())
            for step, value in t.intermediate_values.items():
                stored, kind = step_repr(value)
                tables[models.TrialIntermediateValueModel].append({"trial_id": tid, "step": step, "intermediate_value": stored,
                                                                   "intermediate_value_type": kind})
        for model, values in tables.items():
            if values:
                session.execute(insert(model.__table__), values)  # Core executemany: no ORM bookkeeping per row


def _check_compatible(trials: list[optuna.trial.FrozenTrial]) -> None:
    """A param name keeps one kind of distribution within a study (the check `add_trials` makes row by row)."""
    seen: dict[str, BaseDistribution] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            if seen.setdefault(name, dist) is not dist:
                check_distribution_compatibility(seen[name], dist)


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
    storage = open_storage(storage) if isinstance(storage, str) else storage
    with quiet_optuna():
        for name in optuna.get_all_study_names(storage):  # names only: summaries would read every trial of every study
            if name.startswith(prefix + "/") and name.removeprefix(prefix + "/") not in studies:
                optuna.delete_study(study_name=name, storage=storage)
    for suffix, (trials, attrs) in studies.items():
        write_study(storage, f"{prefix}/{suffix}", trials, attrs, metric_name=SEARCH_METRIC_NAME)
    return [f"{prefix}/{suffix}" for suffix in studies]
