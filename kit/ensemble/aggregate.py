"""Test-time aggregation: how the K fold models' test logits meet a decision fitted on single-model OOF.

Each OOF row was predicted by one fold model, and the decision (temperature, α, offsets, thresholds)
was fitted on those rows; on the test set there are K models. Three ways to combine them:
- `mean_logits`: average the K logits, then calibrate and decide once;
- `mean_probs`: calibrate each model's logits, average the probabilities, then decide;
- `vote`: decide per fold model, then majority vote (ties: the `mean_logits` decision).
Measured by benchmarks/bench_aggregation.py (numbers at TEST_AGGREGATION); the kit uses the winner.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from kit.ensemble.pipeline import Blend

AGGREGATIONS = ("mean_logits", "mean_probs", "vote")
# Measured on the demo's trained outputs (5,000 / 1,700 synthetic images at 128 px, cnn/resnet/effnet_demo x 5
# folds, seed 42), 12 decisions fitted on all OOF folds (each variant alone and their equal blend, x argmax /
# Bayes rule / offsets): score on solution.csv averaged over the 12, and the total-variation distance between
# the predicted class rates on test and on OOF (smaller: the decision behaves on test as it did on OOF):
#   mean_logits -2.786 (TV 0.023, best in 2 of 12), mean_probs -2.755 (TV 0.019, best in 9), vote -2.812 (TV 0.023, best in 1).
# The gap is largest where the decision is fitted most (resnet_demo, Bayes rule: OOF -1.834; test -1.899 / -1.756 / -1.849).
TEST_AGGREGATION = "mean_probs"


def aggregate_predict(blend: Blend, member_test_logits: list[np.ndarray], how: str = TEST_AGGREGATION) -> np.ndarray:
    """(m, C) indicator (for a probability or ranking metric: probabilities) for the test rows from each member's
    (K, m, C) fold-model logits."""
    if how == "mean_logits":
        return blend.predict([z.mean(axis=0) for z in member_test_logits])
    if how == "mean_probs":
        return blend.decision.predict(_mean_prob_mixture(blend, member_test_logits))
    if how == "vote":
        if blend.decision.metric.kind != "label":
            raise ValueError("the vote aggregation needs labels; a probability or ranking metric averages (mean_logits, mean_probs)")
        k = member_test_logits[0].shape[0]
        votes = np.stack([blend.predict([z[j] for z in member_test_logits]) for j in range(k)]).astype(np.int64)
        counts = votes.sum(axis=0)  # (m, C)
        if blend.decision.task == "multi-label":
            return (2 * counts > k).astype(np.uint8)
        fallback = blend.predict([z.mean(axis=0) for z in member_test_logits])
        top = counts.max(axis=1, keepdims=True)
        tied = (counts == top).sum(axis=1) > 1
        winner = np.argmax(counts, axis=1)
        winner[tied] = fallback[tied].argmax(axis=1)
        return np.eye(counts.shape[1], dtype=np.uint8)[winner]
    raise ValueError(f"unknown aggregation {how!r}; use one of {AGGREGATIONS}")


def _mean_prob_mixture(blend: Blend, member_test_logits: list[np.ndarray]) -> np.ndarray:
    """Per member: the mean over fold models of the calibrated probabilities, as calibrated logits, pooled."""
    pooled = []
    for calibration, z in zip(blend.calibrations, member_test_logits):
        lp = np.stack([calibration.log_probs(zk) for zk in z])  # (K, m, C)
        mean_lp = logsumexp(lp, axis=0) - np.log(len(z))
        if calibration.task == "multi-label":
            mean_lp = mean_lp - np.log(np.clip(-np.expm1(mean_lp), 1e-12, None))
        pooled.append(mean_lp.astype(np.float32))
    return blend.combine(pooled)
