"""Simulated OOF at the competition's size (51,043 × 20, the competition's class counts) for the decision benchmarks."""

from __future__ import annotations

import numpy as np

from kit.data.synth import COMPETITION_COUNTS

COUNTS = list(COMPETITION_COUNTS.values())  # in the order of the classes


def demo_counts(n: int = 5000, floor: int = 8) -> list[int]:
    """The competition's class balance scaled to about n rows, every class at least `floor` (so each fold has it)."""
    return [max(floor, round(c * n / sum(COUNTS))) for c in COUNTS]


def stratified(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    fold = np.empty(len(y), dtype=np.int64)
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def sampler_model_oof(seed: int = 0, signal: float = 1.6, overconfidence: float = 1.5, bias_sd: float = 0.3, k: int = 5):
    """(logits, labels, fold, q) of a model trained under a sqrt sampler (prior q ∝ √π): over-confident
    (logits × 1.5) with small per-class biases, so temperature, prior correction, the Bayes rule and
    offsets all have something to do."""
    rng = np.random.default_rng(seed)
    c = len(COUNTS)
    y = rng.permutation(np.repeat(np.arange(c), COUNTS))
    n = len(y)
    pi = np.array(COUNTS) / n
    q = np.sqrt(pi) / np.sqrt(pi).sum()
    z = rng.normal(size=(n, c))
    z[np.arange(n), y] += signal
    logits = (signal * z + np.log(q) + rng.normal(0, bias_sd, size=c)) * overconfidence
    return logits.astype(np.float32), np.eye(c, dtype=np.uint8)[y], stratified(y, k, rng), q


def complementary_members(n_members: int, seed: int = 0, k: int = 5, n_test: int = 2000, counts: list[int] | None = None):
    """(labels, fold, [(logits, test_logits, train_prior)]): each member sees its own share of the classes
    well and the rest weakly, so a blend has something to gain; member j trained under a sampler of power j/2.
    `counts`: rows per class (default: the competition's)."""
    counts = COUNTS if counts is None else counts
    rng = np.random.default_rng(seed)
    c = len(counts)
    y = rng.permutation(np.repeat(np.arange(c), counts))
    labels = np.eye(c, dtype=np.uint8)[y]
    fold = stratified(y, k, rng)
    prior = np.asarray(counts) / sum(counts)
    y_test = rng.choice(c, size=n_test, p=prior)
    members = []
    for j in range(n_members):
        q = prior ** (1 - 0.5 * (j % 3)) / (prior ** (1 - 0.5 * (j % 3))).sum()
        strength = np.where(np.isin(np.arange(c), np.arange(j, c, n_members)), 2.5, 1.0)
        logits = np.log(q) + rng.normal(0, 1.0, labels.shape) + labels * strength
        test = np.log(q) + rng.normal(0, 1.0, (k, n_test, c)) + np.eye(c)[y_test] * strength
        members.append((logits.astype(np.float32), test.astype(np.float32), q))
    return labels, fold, members
