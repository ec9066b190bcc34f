"""The blend as one fitted object: per-member calibration, weights, and a decision rule on the mixture.

Fitting happens on some rows only (the other folds, inside nested CV; all folds for the submission):
1. each member's temperature T and prior-correction strength α by NLL, so every member speaks calibrated
   log-probabilities under the true class distribution;
2. weights by a weighting of kit.ensemble.weights, each mixture scored by the metric's closed-form rule, or
   a stacker (kit.ensemble.stack: a logistic regression on the members' terms, C by inner CV on these rows);
3. a decision candidate of kit.decision.candidates fitted on the mixture (whose own training prior is
   the true one: the members are already corrected).
Multi-class members are pooled log-linearly (weighted sum of log-probabilities); multi-label members as
weighted sums of per-class log-odds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kit.config import BlendConfig
from kit.decision.calibration import Calibrator, class_prior, fit_calibrator
from kit.decision.candidates import Candidate, FitContext, fit
from kit.decision.rules import Decision, closed_form_decision
from kit.ensemble.stack import Stacker
from kit.ensemble.weights import WEIGHTINGS, mix, rank_terms

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
    """Fitted member calibrations, the combination (weights, or a stacker) and the decision on their mixture."""

    members: tuple[str, ...]
    calibrations: tuple[Calibrator, ...]
    weights: np.ndarray | None  # None for the stacker
    decision: Decision
    stacker: Stacker | None = None
    rank: bool = False  # the rank average: the weights apply to the terms' per-column ranks

    def combine(self, terms: list[np.ndarray]) -> np.ndarray:
        """The mixture of the members' pool terms: their weighted sum (of ranks, for the rank average), or the stacker's output."""
        if self.stacker is not None:
            return self.stacker.combine(terms)
        return mix(rank_terms(terms) if self.rank else terms, self.weights)

    def mixture(self, member_logits: list[np.ndarray]) -> np.ndarray:
        """The pooled calibrated logits the decision reads."""
        return self.combine([pool_term(c, z) for c, z in zip(self.calibrations, member_logits)])

    def predict(self, member_logits: list[np.ndarray]) -> np.ndarray:
        return self.decision.predict(self.mixture(member_logits))


def mixture_scorer(labels: np.ndarray, context: FitContext):
    """`score(z)`: the metric of the closed-form rule (T = 1, no shift) on a mixture of calibrated logits (for a
    probability or ranking metric: of its softmax / sigmoid), oriented so that higher is better (log-loss negated)."""
    prior = class_prior(labels)
    rule = closed_form_decision(context.task, context.classes, prior, prior, context.metric)
    if context.metric.kind != "label":
        sign = context.metric.sign
        return lambda z: sign * context.metric.score(labels, rule.predict(z))
    if context.task == "multi-label":
        return lambda z: context.metric.score(labels, rule.predict(z))
    y_idx, c = labels.argmax(axis=1), len(context.classes)
    return lambda z: context.metric.score_from_indices(y_idx, rule.predict_indices(z), c)


def fit_blends(
    members: list[Member], labels: np.ndarray, rows: np.ndarray, weightings: list[str], rules: list[Candidate], context: FitContext,
    *,
    blend_settings: BlendConfig | None = None,
) -> dict[tuple[str, str], Blend]:
    """Every (weighting, rule) blend fitted on `rows` (a boolean mask) only, sharing the member calibrations
    and each weighting's weights (or stacker)."""
    y = labels[rows]
    calibrations = tuple(member_calibration(m, m.logits[rows], y, context.task) for m in members)
    zs = [pool_term(c, m.logits[rows]) for c, m in zip(calibrations, members)]
    score = mixture_scorer(y, context)
    names = tuple(m.name for m in members)
    out = {}
    for weighting in weightings:
        combination = WEIGHTINGS.get(weighting, where="blend")(zs, y, score, context.task, blend_settings or BlendConfig())
        weights, stacker, mixture_prior = combination.weights, combination.stacker, combination.mixture_prior
        blend = Blend(names, calibrations, weights, None, stacker, rank=combination.rank)  # type: ignore[arg-type]  # the decision follows
        z = blend.combine(zs)
        blend_context = FitContext(context.task, context.classes, context.metric, mixture_prior, context.settings)  # fresh NLL cache per mixture
        for rule in rules:
            out[(weighting, rule.name)] = replace(blend, decision=fit(rule, z, y, blend_context))
    return out
