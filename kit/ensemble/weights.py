"""How much each member counts: the best single member, equal weights, or greedy selection.

Each weighting is `fn(zs, score) -> weights` over the members' calibrated logits on the fitting rows,
with `score(z)` the metric of a fixed rule on a mixture, oriented so that higher is better (a lower-is-better
metric such as log-loss comes negated); WEIGHTINGS lists them from the simplest.

For a ranking metric (AUC, mAP) the blend also offers `rank_average` (RANK_AVERAGE): equal weights on each
member's per-column ranks scaled to (0, 1] (`rank_terms`), instead of on its calibrated logits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata

DEFAULT_STEPS = 25
RANK_AVERAGE = "rank_average"
Score = Callable[[np.ndarray], float]


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


def single_best(zs: list[np.ndarray], score: Score) -> np.ndarray:
    """All weight on the member that scores best on these rows."""
    weights = np.zeros(len(zs))
    weights[int(np.argmax([score(z) for z in zs]))] = 1.0
    return weights


def equal(zs: list[np.ndarray], score: Score) -> np.ndarray:
    """The plain average: nothing fitted, so nothing to overfit."""
    return np.full(len(zs), 1.0 / len(zs))


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


WEIGHTINGS: dict[str, Callable[[list[np.ndarray], Score], np.ndarray]] = {
    "single_best": single_best,
    "equal": equal,
    "greedy": greedy,
}
