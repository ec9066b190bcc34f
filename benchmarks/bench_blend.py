"""The blend at the competition's size: 51,043 OOF rows × 20 classes, 3 members, 5 folds, with and without the stacker.

Measures `kit blend`'s fitting: the nested CV of every (weighting, rule) pair (members' T and α, weights and
rule fitted inside each outer fold), the refit of the chosen pair on all folds, and writing + validating a
17,015-row submission in the sample's format. Baseline in the same run: one member's `kit calibrate`
selection (so the ratio says what blending costs beyond calibrating); and the blend's selection with the stacker
(weighting "stack") against without it, at this size and at the demo's (5,000 rows). Members: benchmarks/simulate.py.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.simulate import complementary_members, demo_counts
from kit.config import CalibrateConfig, CompetitionConfig, DataConfig, PathsConfig
from kit.decision.candidates import FitContext, candidates_for
from kit.decision.metrics import LinearCountMetric
from kit.decision.select import select_decision
from kit.ensemble.aggregate import aggregate_predict
from kit.ensemble.pipeline import Member
from kit.ensemble.select import BLEND_RULES, BLEND_WEIGHTINGS, pair_label, select_blend
from kit.ensemble.stack import STACK
from kit.ensemble.weights import WEIGHTINGS
from kit.submission import write_submission

N_TEST = 17_015


def _blend_seconds(members, labels, fold, context, weightings, rules):
    t0 = time.perf_counter()
    selection = select_blend(members, labels, fold, context, weightings, rules)
    test_pred = aggregate_predict(selection.final, [m.test_logits for m in members])
    return time.perf_counter() - t0, selection, test_pred


def stack_cost(n_rows: int = 5000) -> dict:
    """`kit blend`'s selection with and without the stacker on demo-sized OOF (the competition's balance scaled to
    n_rows, every class at least 8 rows; 3 members, 5 folds)."""
    labels, fold, raw = complementary_members(3, n_test=1700, counts=demo_counts(n_rows))
    members, context, rules = _setup(labels, raw)
    without_s, without, _ = _blend_seconds(members, labels, fold, context, [w for w in WEIGHTINGS if w != STACK], rules)
    with_s, with_stack, _ = _blend_seconds(members, labels, fold, context, BLEND_WEIGHTINGS, rules)
    return {"rows": int(len(labels)), "without_stack_s": round(without_s, 2), "with_stack_s": round(with_s, 2),
            "ratio_with_to_without_stack": round(with_s / without_s, 2),
            "chosen_without_stack": pair_label(without.chosen), "chosen_with_stack": pair_label(with_stack.chosen),
            "nested_cv": {pair_label(k): round(s.mean, 4) for k, s in with_stack.scores.items()}}


def _setup(labels, raw):
    c = labels.shape[1]
    metric = LinearCountMetric()
    members = [Member(f"m{j}", logits, test, q) for j, (logits, test, q) in enumerate(raw)]
    context = FitContext("multi-class", tuple(f"class_{i}" for i in range(c)), metric, np.ones(c) / c, CalibrateConfig())
    return members, context, candidates_for("multi-class", metric, BLEND_RULES["multi-class"])


def main() -> dict:
    labels, fold, raw = complementary_members(3, n_test=N_TEST)
    members, context, rules = _setup(labels, raw)
    metric = context.metric

    t0 = time.perf_counter()
    single_context = FitContext("multi-class", context.classes, metric, members[0].train_prior, CalibrateConfig())
    single = select_decision(members[0].logits, labels, fold, single_context, candidates_for("multi-class", metric))
    calibrate_s = time.perf_counter() - t0

    blend_s, selection, test_pred = _blend_seconds(members, labels, fold, context, [w for w in WEIGHTINGS if w != STACK], rules)
    stack_s, stacked, _ = _blend_seconds(members, labels, fold, context, BLEND_WEIGHTINGS, rules)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        ids = np.array([f"test_{i:06d}" for i in range(N_TEST)])
        pd.DataFrame({"id": ids, **{name: 0 for name in context.classes}}).to_csv(data / "sample_submission.csv", index=False)
        cfg = CompetitionConfig(data=DataConfig(dir=data), paths=PathsConfig(submissions=Path(tmp) / "subs"))
        t0 = time.perf_counter()
        write_submission(test_pred, ids, list(context.classes), cfg, "bench", {})
        write_s = time.perf_counter() - t0

    result = {
        "rows": int(len(labels)), "classes": int(labels.shape[1]), "folds": int(len(np.unique(fold))), "members": len(members),
        "blend_nested_and_refit_s": round(blend_s, 2), "one_member_calibrate_s": round(calibrate_s, 2),
        "ratio_blend_to_one_calibrate": round(blend_s / calibrate_s, 2),
        "blend_with_stack_nested_and_refit_s": round(stack_s, 2), "ratio_with_to_without_stack": round(stack_s / blend_s, 2),
        "chosen_with_stack": pair_label(stacked.chosen),
        "nested_cv_with_stack": {pair_label(k): round(s.mean, 4) for k, s in stacked.scores.items() if k[0] == "stack"},
        "demo_size": stack_cost(),
        "write_submission_17015_rows_s": round(write_s, 3),
        "nested_cv": {pair_label(k): round(s.mean, 4) for k, s in selection.scores.items()},
        "chosen": pair_label(selection.chosen), "best_single_member_calibrated_nested_cv": round(single.scores[single.choice.chosen].mean, 4),
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    return result


if __name__ == "__main__":
    main()
