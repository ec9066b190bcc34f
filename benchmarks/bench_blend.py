"""Blender speed at the competition's size: 51,043 OOF rows × 20 classes, 3 and 5 variants, 5 folds.

Measures the greedy weight search on all folds, its nested CV (K searches on K−1 folds), and
writing + validating a 17,015-row submission in the sample's format. Also records the nested-CV
scores so a speed change that changes results is visible.
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config import CompetitionConfig, DataConfig, MetricConfig, PathsConfig
from kit.stages.blend import DEFAULT_STEPS, caruana_weights, class_prior, fold_score, make_scorer, nested_blend
from kit.submission import write_submission

N_TRAIN, N_TEST, N_CLASSES, N_FOLDS = 51_043, 17_015, 20, 5
COUNTS = [34097, 3356, 2600, 2300, 1500, 1300, 1100, 1000, 800, 700, 500, 450, 400, 350, 250, 180, 70, 45, 40, 5]


def _data(n_variants: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(N_CLASSES), COUNTS))
    labels = np.eye(N_CLASSES, dtype=np.uint8)[y]
    fold = np.empty(len(y), dtype=np.int64)
    for c in range(N_CLASSES):
        rows = rng.permutation(np.flatnonzero(y == c))
        fold[rows] = np.arange(len(rows)) % N_FOLDS
    prior = np.asarray(COUNTS) / sum(COUNTS)
    zs = []
    for v in range(n_variants):
        seen = np.arange(v, N_CLASSES, n_variants)
        logits = np.log(prior) + rng.normal(0, 1.0, labels.shape) + labels * np.where(np.isin(np.arange(N_CLASSES), seen), 2.5, 1.0)
        zs.append((logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32))
    return labels, fold, zs


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> dict:
    weights = MetricConfig()
    result: dict = {"rows": N_TRAIN, "classes": N_CLASSES, "folds": N_FOLDS, "steps": DEFAULT_STEPS}
    for n_variants in (3, 5):
        labels, fold, zs = _data(n_variants)
        score = make_scorer(labels, class_prior(labels), weights, "multi-class")
        one_eval = float(np.median([_timed(partial(score, zs[0]))[1] for _ in range(7)]))
        (w, in_sample), t_all = _timed(partial(caruana_weights, zs, score))
        (nested, _), t_nested = _timed(partial(nested_blend, zs, labels, fold, weights, "multi-class"))
        singles = [fold_score(z, labels, fold, weights, "multi-class") for z in zs]
        result[f"{n_variants}_variants"] = {
            "score_eval_ms": round(one_eval * 1000, 2),
            "weight_search_all_folds_s": round(t_all, 2),
            "nested_cv_weight_search_s": round(t_nested, 2),
            "nested_cv_blend": round(nested, 4),
            "best_single_nested_cv": round(max(singles), 4),
            "in_sample_blend": round(in_sample, 4),
            "weights": [round(float(x), 3) for x in w],
        }
        print(f"{n_variants} variants: {result[f'{n_variants}_variants']}")

    classes = [f"class_{i}" for i in range(N_CLASSES)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        ids = np.array([f"test_{i:06d}" for i in range(N_TEST)])
        pd.DataFrame({"id": ids, **{c: 0 for c in classes}}).to_csv(data / "sample_submission.csv", index=False)
        cfg = CompetitionConfig(data=DataConfig(dir=data), paths=PathsConfig(submissions=Path(tmp) / "subs"))
        pred = np.eye(N_CLASSES, dtype=np.uint8)[np.random.default_rng(1).integers(0, N_CLASSES, N_TEST)]
        _, t_write = _timed(lambda: write_submission(pred, ids[::-1], classes, cfg, "bench", {}))
        result["write_submission_17015_rows_s"] = round(t_write, 3)
    print(f"write + validate {N_TEST} rows: {result['write_submission_17015_rows_s']} s")
    return result


if __name__ == "__main__":
    main()
