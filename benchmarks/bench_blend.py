"""The blend at the competition's size: 51,043 OOF rows × 20 classes, 3 members, 5 folds.

Measures `kit blend`'s fitting: the nested CV of every (weighting, rule) pair (members' T and α, weights and
rule fitted inside each outer fold), the refit of the chosen pair on all folds, and writing + validating a
17,015-row submission in the sample's format. Baseline in the same run: one member's `kit calibrate`
selection (so the ratio says what blending costs beyond calibrating). Members: benchmarks/simulate.py.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.simulate import complementary_members
from kit.config import CalibrateConfig, CompetitionConfig, DataConfig, PathsConfig
from kit.decision.candidates import FitContext, candidates_for
from kit.decision.metrics import LinearCountMetric
from kit.decision.select import select_decision
from kit.ensemble.aggregate import aggregate_predict
from kit.ensemble.pipeline import Member
from kit.ensemble.select import BLEND_RULES, pair_label, select_blend
from kit.ensemble.weights import WEIGHTINGS
from kit.submission import write_submission

N_TEST = 17_015


def main() -> dict:
    labels, fold, raw = complementary_members(3, n_test=N_TEST)
    c = labels.shape[1]
    metric = LinearCountMetric()
    members = [Member(f"m{j}", logits, test, q) for j, (logits, test, q) in enumerate(raw)]
    context = FitContext("multi-class", tuple(f"class_{i}" for i in range(c)), metric, np.ones(c) / c, CalibrateConfig())
    rules = candidates_for("multi-class", metric, BLEND_RULES["multi-class"])
    weightings = list(WEIGHTINGS)

    t0 = time.perf_counter()
    single_context = FitContext("multi-class", context.classes, metric, members[0].train_prior, CalibrateConfig())
    single = select_decision(members[0].logits, labels, fold, single_context, candidates_for("multi-class", metric))
    calibrate_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    selection = select_blend(members, labels, fold, context, weightings, rules)
    test_pred = aggregate_predict(selection.final, [m.test_logits for m in members])
    blend_s = time.perf_counter() - t0

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
        "rows": int(len(labels)), "classes": int(c), "folds": int(len(np.unique(fold))), "members": len(members),
        "blend_nested_and_refit_s": round(blend_s, 2), "one_member_calibrate_s": round(calibrate_s, 2),
        "ratio_blend_to_one_calibrate": round(blend_s / calibrate_s, 2),
        "write_submission_17015_rows_s": round(write_s, 3),
        "nested_cv": {pair_label(k): round(s.mean, 4) for k, s in selection.scores.items()},
        "chosen": pair_label(selection.chosen), "best_single_member_calibrated_nested_cv": round(single.scores[single.choice.chosen].mean, 4),
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    return result


if __name__ == "__main__":
    main()
