"""The blend as one fitted object: per-member calibration, weights, and a decision rule on the mixture.

Fitting happens on some rows only (the other folds, inside nested CV; all folds for the submission):
1. each member's temperature T and prior-correction strength α by NLL, so every member speaks calibrated
   log-probabilities under the true class distribution;
2. weights by a weighting of kit.ensemble.weights, each mixture scored by the metric's closed-form rule;
3. a decision candidate of kit.decision.candidates fitted on the mixture (whose own training prior is
   the true one: the members are already corrected).
Multi-class members are pooled log-linearly (weighted sum of log-probabilities); multi-label members as
weighted sums of per-class log-odds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.decision.calibration import Calibrator, class_prior, fit_calibrator
from kit.decision.candidates import Candidate, FitContext, fit
from kit.decision.rules import Decision, closed_form_decision
from kit.ensemble.weights import WEIGHTINGS, mix

_TINY = 1e-12


@dataclass(frozen=True)
class Member:
    """One variant's OOF and test logits as the blend sees them."""

    name: str
    logits: np.ndarray  # (n, C) out-of-fold
    test_logits: np.ndarray  # (K, m, C) one slice per fold model
    train_prior: np.ndarray  # (C,)


def member_calibration(member: Member, logits: np.ndarray, labels: np.ndarray, task: str) -> Calibrator:
    """(T, α) of one member fitted by NLL on labelled rows, undoing its own training prior."""
    return fit_calibrator(logits, labels, member.train_prior, task)


def pool_term(calibrator: Calibrator, logits: np.ndarray) -> np.ndarray:
    """A member's term in the pool (float32): its calibrated log-probabilities (multi-class), or its calibrated
    log-odds log p − log(1 − p) (multi-label); either way their softmax / sigmoid is the calibrated probability."""
    lp = calibrator.log_probs(logits)
    if calibrator.task == "multi-label":
        return (lp - np.log(np.clip(-np.expm1(lp), _TINY, None))).astype(np.float32)
    return lp.astype(np.float32)


@dataclass(frozen=True)
class Blend:
    """Fitted member calibrations, weights and the decision on their mixture."""

    members: tuple[str, ...]
    calibrations: tuple[Calibrator, ...]
    weights: np.ndarray
    decision: Decision

    def mixture(self, member_logits: list[np.ndarray]) -> np.ndarray:
        """The pooled calibrated logits the decision reads."""
        return mix([pool_term(c, z) for c, z in zip(self.calibrations, member_logits)], self.weights)

    def predict(self, member_logits: list[np.ndarray]) -> np.ndarray:
        return self.decision.predict(self.mixture(member_logits))


def mixture_scorer(labels: np.ndarray, context: FitContext):
    """`score(z)`: the metric of the closed-form rule (T = 1, no shift) on a mixture of calibrated logits."""
    prior = class_prior(labels)
    rule = closed_form_decision(context.task, context.classes, prior, prior, context.metric)
    if context.task == "multi-label":
        return lambda z: context.metric.score(labels, rule.predict(z))
    y_idx, c = labels.argmax(axis=1), len(context.classes)
    return lambda z: context.metric.score_from_indices(y_idx, rule.predict_indices(z), c)


def fit_blends(
    members: list[Member], labels: np.ndarray, rows: np.ndarray, weightings: list[str], rules: list[Candidate], context: FitContext,
) -> dict[tuple[str, str], Blend]:
    """Every (weighting, rule) blend fitted on `rows` (a boolean mask), sharing the member calibrations
    and each weighting's weights."""
    y = labels[rows]
    calibrations = tuple(member_calibration(m, m.logits[rows], y, context.task) for m in members)
    zs = [pool_term(c, m.logits[rows]) for c, m in zip(calibrations, members)]
    score = mixture_scorer(y, context)
    names = tuple(m.name for m in members)
    out = {}
    for weighting in weightings:
        weights = WEIGHTINGS[weighting](zs, score)
        z = mix(zs, weights)
        blend_context = FitContext(context.task, context.classes, context.metric, class_prior(y), context.settings)  # fresh NLL cache per mixture
        for rule in rules:
            decision = fit(rule, z, y, blend_context)
            out[(weighting, rule.name)] = Blend(names, calibrations, weights, decision)
    return out
