"""kit.decision.record's bulk writer stores what Optuna's own `Study.add_trials` stores, read back through
Optuna's public API: numbers, states, values, params and their distributions, attributes, intermediate values
and times; the studies on a journal file take `add_trials` itself."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from kit.decision.record import write_study
from kit.studies import open_storage, quiet_optuna


def sample_trials() -> list[optuna.trial.FrozenTrial]:
    dists = {"candidate": CategoricalDistribution(["a", "b", "c"]), "offset[x]": FloatDistribution(-2.0, 2.0),
             "steps": IntDistribution(1, 9), "lr": FloatDistribution(1e-4, 1.0, log=True)}
    trials = []
    for i in range(7):
        trials.append(optuna.trial.create_trial(
            params={"candidate": "abc"[i % 3], "offset[x]": -2.0 + 0.5 * i, "steps": 1 + i, "lr": 10.0 ** -(i % 4)},
            distributions=dists, value=[0.25 * i, float("inf"), float("-inf")][i % 3] if i < 3 else -0.125 * i,
            user_attrs={"chosen": i == 2, "se": 0.01 * i, "fold0.offsets": {"x": 0.5, "y": -1.0}, "label": f"trial {i}", "none": None},
            system_attrs={"kit:order": i}, intermediate_values={0: 0.1 * i, 1: float("nan"), 2: float("inf"), 4: -float("inf")} if i % 2 else {},
        ))
    trials.append(optuna.trial.create_trial(params={"candidate": "a"}, distributions={"candidate": dists["candidate"]},
                                            state=optuna.trial.TrialState.FAIL))
    return trials


def stored(storage, name: str) -> list[tuple]:
    def same(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    with quiet_optuna():
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    return [(t.number, t.state, t.values, t.params, t.distributions, t.user_attrs, t.system_attrs,
             {k: same(v) for k, v in t.intermediate_values.items()}, t.datetime_start, t.datetime_complete) for t in trials]


def test_bulk_write_stores_what_add_trials_stores(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    trials = sample_trials()
    write_study(url, "bulk", trials, {"chosen": "b", "trivial_baseline": -1.5})
    with quiet_optuna():
        reference = optuna.create_study(storage=url, study_name="reference", direction="maximize")
        reference.add_trials(trials)
    assert stored(url, "bulk") == stored(url, "reference")
    study = optuna.load_study(study_name="bulk", storage=url)
    assert study.best_trial.number == 1 and study.user_attrs == {"chosen": "b", "trivial_baseline": -1.5}  # the +inf trial
    write_study(open_storage(url), "bulk", trials[:3], {})  # a re-run replaces the study
    assert [t[0] for t in stored(url, "bulk")] == [0, 1, 2]


def test_bulk_write_refuses_what_add_trials_refuses(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    a = optuna.trial.create_trial(params={"x": 1.0}, distributions={"x": FloatDistribution(0, 2)}, value=1.0)
    b = optuna.trial.create_trial(params={"x": "u"}, distributions={"x": CategoricalDistribution(["u"])}, value=1.0)
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        write_study(url, "s", [a, b], {})
    assert optuna.load_study(study_name="s", storage=url).trials == []  # nothing half-written


def test_journal_storage_takes_add_trials(tmp_path):
    url = f"journal://{tmp_path / 'optuna.log'}"
    trials = sample_trials()
    write_study(open_storage(url), "s", trials, {})
    assert [t[1:8] for t in stored(open_storage(url), "s")] == [t[1:8] for t in stored_reference(trials, tmp_path)]


def stored_reference(trials, tmp_path) -> list[tuple]:
    url = f"sqlite:///{tmp_path / 'reference.db'}"
    with quiet_optuna():
        optuna.create_study(storage=url, study_name="r").add_trials(trials)
    return stored(url, "r")
