"""How much each member counts: the best single member, equal weights, or greedy selection.

Each weighting is `fn(zs, score) -> weights` over the members' calibrated logits on the fitting rows,
with `score(z)` the metric of a fixed rule on a mixture; WEIGHTINGS lists them from the simplest.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DEFAULT_STEPS = 25
Score = Callable[[np.ndarray], float]


def mix(zs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted sum of the members' calibrated logits (a log-linear pool), float32."""
    out = np.zeros_like(zs[0], dtype=np.float32)
    for z, w in zip(zs, weights):
        if w > 0:
            out += np.float32(w) * np.asarray(z, dtype=np.float32)
    return out


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
