"""Class-balanced sampling and the class distribution a sampler induces (what `train_prior` records)."""

from __future__ import annotations

import numpy as np

PRIOR_FLOOR = 0.5  # pseudo-count for a class absent from the training folds, so priors stay positive


def sample_weights(labels: np.ndarray, power: float) -> np.ndarray:
    """Per-image sampling weight ∝ (1/n_c)^power for its class (multi-label: its rarest positive class,
    images with no positive label count as one more class)."""
    labels = np.asarray(labels, dtype=np.float64)
    if power == 0:
        return np.ones(len(labels))
    counts = np.maximum(labels.sum(axis=0), PRIOR_FLOOR)
    per_class = counts ** (-power)
    has_label = labels.sum(axis=1) > 0
    weights = np.where(has_label, (labels * per_class).max(axis=1), 0.0)
    if (~has_label).any():
        weights[~has_label] = float((~has_label).sum()) ** (-power)
    return weights


def sampler_prior(labels: np.ndarray, weights: np.ndarray, task: str) -> np.ndarray:
    """The class distribution a weighted sampler induces (for one-hot labels ∝ n_c^(1−power));
    multi-label: each class's positive rate under the sampler. Never zero."""
    labels = np.asarray(labels, dtype=np.float64)
    mass = weights @ labels + PRIOR_FLOOR * weights.mean()
    if task == "multi-label":
        return np.clip(mass / weights.sum(), 1e-6, 1 - 1e-6)
    return mass / mass.sum()


def smoothed_class_prior(labels: np.ndarray, task: str) -> np.ndarray:
    """Class frequencies (multi-class) or positive rates (multi-label) of the training folds with a pseudo-count
    of PRIOR_FLOOR per class, so never zero (the same pseudo-count as `sampler_prior`). Not the decision layer's
    `kit.decision.calibration.class_prior`, the plain frequencies of labelled rows."""
    labels = np.asarray(labels, dtype=np.float64)
    mass = labels.sum(axis=0) + PRIOR_FLOOR
    if task == "multi-label":
        return np.clip(mass / (len(labels) + 2 * PRIOR_FLOOR), 1e-6, 1 - 1e-6)
    return mass / mass.sum()
