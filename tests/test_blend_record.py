"""The blend record (kit.ensemble.record): every (weighting, rule) blend, the stacker included, rebuilt from its
JSON computes the very bytes the fitted blend computes, on OOF rows and through the test aggregation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kit.config import BlendConfig, MetricConfig
from kit.decision.candidates import FitContext, candidates_for
from kit.decision.metrics import build_metric
from kit.ensemble.aggregate import AGGREGATIONS, aggregate_predict
from kit.ensemble.pipeline import Member, fit_blends
from kit.ensemble.record import blend_from_record, blend_record
from kit.ensemble.select import BLEND_RULES, BLEND_WEIGHTINGS


def _members(task: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    n, c, k = 400, 4, 3
    if task == "multi-class":
        y = rng.choice(c, size=n, p=[0.6, 0.25, 0.1, 0.05])
        labels = np.eye(c, dtype=np.uint8)[y]
    else:
        labels = (rng.random((n, c)) < [0.4, 0.2, 0.1, 0.3]).astype(np.uint8)
    members = []
    for m, signal in enumerate((1.5, 0.8)):
        def draw(rows, signal=signal):
            return (rng.normal(size=(rows, c)) + signal * (2 * labels[:rows] - 1 if task == "multi-label" else 2 * labels[:rows])).astype(np.float32)
        prior = labels.mean(axis=0) if task == "multi-label" else np.full(c, 1 / c)
        members.append(Member(f"m{m}", draw(n), np.stack([draw(150) for _ in range(k)]), prior))
    return members, labels


@pytest.mark.parametrize("task", ["multi-class", "multi-label"])
def test_every_blend_rebuilt_from_its_record_computes_the_same_bytes(task):
    members, labels = _members(task)
    classes = tuple(f"c{j}" for j in range(labels.shape[1]))
    metric = build_metric(MetricConfig())
    context = FitContext(task, classes, metric, np.ones(len(classes)) / len(classes))
    rules = [r for r in candidates_for(task, metric) if r.name in BLEND_RULES[task]]
    blends = fit_blends(members, labels, np.ones(len(labels), dtype=bool), list(BLEND_WEIGHTINGS), rules, context, blend_settings=BlendConfig())
    assert {w for w, _ in blends} == set(BLEND_WEIGHTINGS)
    logits, test_logits = [m.logits for m in members], [m.test_logits for m in members]
    for pair, fitted in blends.items():
        record = json.loads(json.dumps(blend_record(fitted, classes=list(classes), aggregation="mean_probs")))
        rebuilt = blend_from_record(record)
        assert np.array_equal(rebuilt.mixture(logits), fitted.mixture(logits)), pair
        assert np.array_equal(rebuilt.predict(logits), fitted.predict(logits)), pair
        for how in AGGREGATIONS:
            assert np.array_equal(aggregate_predict(rebuilt, test_logits, how), aggregate_predict(fitted, test_logits, how)), (pair, how)


def test_a_damaged_record_is_refused():
    members, labels = _members("multi-class")
    metric = build_metric(MetricConfig())
    context = FitContext("multi-class", ("a", "b", "c", "d"), metric, np.full(4, 0.25))
    rules = [r for r in candidates_for("multi-class", metric) if r.name == "argmax"]
    fitted = fit_blends(members, labels, np.ones(len(labels), dtype=bool), ["equal"], rules, context)[("equal", "argmax")]
    record = blend_record(fitted, classes=["a", "b", "c", "d"], aggregation="mean_probs")
    with pytest.raises(ValueError, match="calibrations"):
        blend_from_record({**record, "calibrations": record["calibrations"][:1]})
    with pytest.raises(ValueError, match="version"):
        blend_from_record({**record, "version": 99})
    with pytest.raises(ValueError, match="either weights or a stacker"):
        blend_from_record({**record, "weights": None})
