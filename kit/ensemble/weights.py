"""How much each member counts: the best single member, equal weights, greedy selection, or a stacker.

A weighting is registered in `WEIGHTINGS` (`kit.registry.Registry`), simplest first, as
`fit(zs, labels, score, task, settings) -> Combination`: the members' calibrated pool terms on the fitting
rows, their labels, `score(z)` (the metric of a fixed rule on a mixture), the task and the stacker's settings. The three
weight vectors are `fn(zs, score) -> weights` (`@register_weights`); the stacker ("stack",
kit.ensemble.stack) learns per-class weights and says which class distribution its mixture predicts under.
`score` is oriented so that higher is better (a lower-is-better metric such as log-loss comes negated).

For a ranking metric (AUC, mAP) the blend also offers `rank_average` (RANK_AVERAGE; kit.ensemble.select leaves it out
for the other metrics): equal weights on each member's per-column ranks scaled to (0, 1] (`rank_terms`), in place of
its calibrated logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from kit.config import BlendConfig
from kit.decision.calibration import class_prior
from kit.ensemble.stack import STACK, Stacker, fit_stacker
from kit.registry import Registry

DEFAULT_STEPS = 25
RANK_AVERAGE = "rank_average"
Score = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Combination:
    """A fitted weighting: weights (or a stacker) and the class distribution its mixture predicts under."""

    weights: np.ndarray | None  # None for the stacker
    stacker: Stacker | None
    mixture_prior: np.ndarray
    rank: bool = False  # the weights apply to the terms' per-column ranks (the rank average)


WeightingFit = Callable[[list[np.ndarray], np.ndarray, Score, str, BlendConfig], Combination]
WEIGHTINGS: Registry[WeightingFit] = Registry("blend weighting")


def register_weights(name: str) -> Callable[[Callable[[list[np.ndarray], Score], np.ndarray]], Callable]:
    """Decorator: `fn(zs, score) -> weights` becomes the weighting `name` (its mixture keeps the labels' prior)."""

    def wrap(fn: Callable[[list[np.ndarray], Score], np.ndarray]) -> Callable:
        def fit(zs: list[np.ndarray], labels: np.ndarray, score: Score, task: str, settings: BlendConfig) -> Combination:
            return Combination(fn(zs, score), None, class_prior(labels))

        WEIGHTINGS.add(name, fit)
        return fn

    return wrap


def mix(zs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted sum of the members' calibrated logits (a log-linear pool), float32."""
    out = np.zeros_like(zs[0], dtype=np.float32)
    for z, w in zip(zs, weights):
        if w > 0:
            out += np.float32(w) * np.asarray(z, dtype=np.float32)
    return out


def rank_terms(zs: list[np.ndarray]) -> list[np.ndarray]:
    """Each member's terms as ranks within each column (ties at their mean rank) divided by the row count:
    what a rank average averages. Only the order within the rows given counts, as for the ranking metrics."""
    return [(rankdata(np.asarray(z, dtype=np.float64), axis=0) / max(len(z), 1)).astype(np.float32) for z in zs]


@register_weights("single_best")
def single_best(zs: list[np.ndarray], score: Score) -> np.ndarray:
    """All weight on the member that scores best on these rows."""
    weights = np.zeros(len(zs))
    weights[int(np.argmax([score(z) for z in zs]))] = 1.0
    return weights


@register_weights("equal")
def equal(zs: list[np.ndarray], score: Score) -> np.ndarray:
    """The plain average: nothing fitted, so nothing to overfit."""
    return np.full(len(zs), 1.0 / len(zs))


@register_weights("greedy")
def greedy(zs: list[np.ndarray], score: Score, steps: int = DEFAULT_STEPS) -> np.ndarray:
    """Greedy ensemble selection with replacement (Caruana et al. 2004): add the member that most improves
    the score, `steps` times; keep the best bag seen (never below the best single member on these rows)."""
    m = len(zs)
    counts = np.zeros(m, dtype=np.int64)
    running = np.zeros_like(zs[0], dtype=np.float32)
    best_counts, best_score = None, -np.inf
    for step in range(1, steps + 1):
        candidates = [score((running + zs[k]) / step) for k in range(m)]
        k = int(np.argmax(candidates))
        counts[k] += 1
        running += zs[k]
        if candidates[k] > best_score + 1e-12:
            best_score, best_counts = candidates[k], counts.copy()
        if m == 1:
            break
    return best_counts / best_counts.sum()


@WEIGHTINGS.register(RANK_AVERAGE)
def rank_average(zs: list[np.ndarray], labels: np.ndarray, score: Score, task: str, settings: BlendConfig) -> Combination:
    """Equal weights on the members' per-column ranks (ranking metrics only): nothing fitted, and no member's
    scale can dominate the mixture."""
    return Combination(np.full(len(zs), 1.0 / len(zs)), None, class_prior(labels), rank=True)


@WEIGHTINGS.register(STACK)
def stack(zs: list[np.ndarray], labels: np.ndarray, score: Score, task: str, settings: BlendConfig) -> Combination:
    """The stacker (the most fitted, so last): C by inner CV on these rows; its mixture predicts under its
    own output prior (flat when class-balanced)."""
    stacker = fit_stacker(zs, labels, task, settings)
    return Combination(None, stacker, stacker.output_prior)
