"""The fitted blend as JSON: what `kit predict` needs to apply the very blend `kit blend` chose to new logits.

`kit blend` writes `blend_record(...)` into its provenance (key "fitted_blend"); `blend_from_record` rebuilds
the same `Blend` object (member calibrations, weights or stacker, decision). Every float is written as
Python's shortest round-tripping repr, so the rebuilt blend computes the same bytes as the one that was fitted.
The stacker's scikit-learn pipelines are stored as their fitted arrays (scaler mean and scale, coefficients,
intercepts, classes), not pickled: a record can be read by any later scikit-learn and by nothing but numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from kit.decision.calibration import Calibrator
from kit.decision.rules import Decision
from kit.ensemble.pipeline import Blend
from kit.ensemble.stack import MAX_ITER, Stacker

RECORD_VERSION = 1
_SCALER = ("mean_", "scale_", "var_")
_REGRESSION = ("coef_", "intercept_", "classes_")


def _floats(a: np.ndarray) -> list:
    return np.asarray(a, dtype=np.float64).tolist()


def blend_record(blend: Blend, *, classes: list[str], aggregation: str, trivial_class: int | None = None) -> dict[str, Any]:
    """The blend as JSON: members, their calibrations, weights or stacker, the decision, the test aggregation;
    `trivial_class` when the blend submits the majority class everywhere (no pair had any skill)."""
    return {
        "version": RECORD_VERSION,
        "classes": list(classes),
        "members": list(blend.members),
        "calibrations": [{"temperature": float(c.temperature), "alpha": float(c.alpha), "train_prior": _floats(c.train_prior),
                          "target_prior": _floats(c.target_prior)} for c in blend.calibrations],
        "weights": None if blend.weights is None else _floats(blend.weights),
        "stacker": None if blend.stacker is None else _stacker_state(blend.stacker),
        "decision": blend.decision.to_dict(),
        "test_aggregation": aggregation,
        "trivial_class": trivial_class,
    }


def blend_from_record(record: dict[str, Any]) -> Blend:
    """The Blend a record describes; ValueError/KeyError/TypeError on a damaged record (the caller names the file)."""
    if record.get("version") != RECORD_VERSION:
        raise ValueError(f"record version {record.get('version')!r}, this kit reads version {RECORD_VERSION}")
    decision = Decision.from_dict(record["decision"])
    task = decision.task
    members = tuple(str(m) for m in record["members"])
    calibrations = tuple(
        Calibrator(task, float(c["temperature"]), float(c["alpha"]), np.asarray(c["train_prior"], dtype=np.float64),
                   np.asarray(c["target_prior"], dtype=np.float64))
        for c in record["calibrations"]
    )
    if len(calibrations) != len(members):
        raise ValueError(f"{len(calibrations)} calibrations for {len(members)} members")
    weights = None if record["weights"] is None else np.asarray(record["weights"], dtype=np.float64)
    stacker = None if record["stacker"] is None else _stacker_from_state(record["stacker"], task)
    if (weights is None) == (stacker is None):
        raise ValueError("a record holds either weights or a stacker")
    return Blend(members, calibrations, weights, decision, stacker)


def _stacker_state(stacker: Stacker) -> dict[str, Any]:
    models = []
    for pipeline in stacker.models:
        scaler, regression = pipeline[0], pipeline[-1]
        models.append({
            **{k: _floats(getattr(scaler, k)) for k in _SCALER},
            "coef_": _floats(regression.coef_), "intercept_": _floats(regression.intercept_),
            "classes_": np.asarray(regression.classes_).tolist(), "C": float(regression.C),
            "class_weight": regression.class_weight,
        })
    return {"models": models, "chosen_c": list(stacker.chosen_c), "output_prior": _floats(stacker.output_prior)}


def _stacker_from_state(state: dict[str, Any], task: str) -> Stacker:
    """Fitted pipelines rebuilt from their arrays: StandardScaler then LogisticRegression, as `fit_stacker` builds them."""
    models = []
    for m in state["models"]:
        scaler = StandardScaler()
        for key in _SCALER:
            setattr(scaler, key, np.asarray(m[key], dtype=np.float64))
        scaler.n_features_in_ = len(m["mean_"])
        scaler.n_samples_seen_ = 0
        regression = LogisticRegression(C=float(m["C"]), class_weight=m["class_weight"], max_iter=MAX_ITER, warm_start=True)
        regression.coef_ = np.asarray(m["coef_"], dtype=np.float64)
        regression.intercept_ = np.asarray(m["intercept_"], dtype=np.float64)
        regression.classes_ = np.asarray(m["classes_"])
        regression.n_features_in_ = regression.coef_.shape[1]
        regression.n_iter_ = np.zeros(1, dtype=np.int32)
        models.append(make_pipeline(scaler, regression))
    return Stacker(task, tuple(models), tuple(float(c) for c in state["chosen_c"]), tuple({} for _ in models),
                   np.asarray(state["output_prior"], dtype=np.float64))
