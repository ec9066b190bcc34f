"""From a model's logits to calibrated log-probabilities under the true class distribution.

``z = logits / T + α · (log π − log q)``: a temperature T and a correction strength α, both fitted by
the negative log-likelihood on labelled OOF rows (docs/decision.md). q is the class distribution the model
was trained under (`train_prior`, e.g. a sampler's), π the true one. The nominal correction is α = 1;
an over-parameterized network partly undoes importance weighting (Byrd & Lipton 2019), so the fitted α
is often nearer 0.5 — and α = 0 means no correction at all. Multi-label classes are independent binary
problems: the shift is in logit units and the probabilities are sigmoids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax

_TINY = 1e-12
TEMPERATURE_BOUNDS = (0.05, 20.0)
ALPHA_BOUNDS = (-0.5, 2.0)


def class_prior(labels: np.ndarray) -> np.ndarray:
    """(C,) class frequencies of an indicator array (multi-label: positive rate per class), never exactly
    0 or 1: the N_k estimate of the Bayes rule and the target prior of the prior correction."""
    labels = np.asarray(labels)
    counts = labels.sum(axis=0).astype(np.float64)
    if labels.ndim == 2 and (labels.sum(axis=1) == 1).all():
        return np.clip(counts / counts.sum(), _TINY, None)
    return np.clip(counts / len(labels), _TINY, 1 - _TINY)


def prior_shift(train_prior: np.ndarray, target_prior: np.ndarray, task: str) -> np.ndarray:
    """(C,) term that moves tempered logits from predicting under `train_prior` to `target_prior`."""
    q = np.asarray(train_prior, dtype=np.float64)
    pi = np.asarray(target_prior, dtype=np.float64)
    if task == "multi-label":
        return _logit(pi) - _logit(q)
    return np.log(np.clip(pi, _TINY, None)) - np.log(np.clip(q, _TINY, None))


def calibrated_logits(logits: np.ndarray, temperature: float, alpha: float, shift: np.ndarray) -> np.ndarray:
    """logits / T + α · shift, in float64."""
    return np.asarray(logits, dtype=np.float64) / float(temperature) + float(alpha) * np.asarray(shift, dtype=np.float64)


def log_probs(z: np.ndarray, task: str) -> np.ndarray:
    """Log-probabilities of calibrated logits: log-softmax (multi-class) or log-sigmoid per class (multi-label)."""
    return -np.logaddexp(0.0, -z) if task == "multi-label" else log_softmax(z, axis=1)


def negative_log_likelihood(z: np.ndarray, labels: np.ndarray, task: str) -> float:
    """Mean NLL of (n, C) calibrated logits against (n, C) indicator labels."""
    if task == "multi-label":
        y = np.asarray(labels, dtype=np.float64)
        return float(np.mean(np.logaddexp(0.0, z) - y * z))
    idx = np.asarray(labels).argmax(axis=1)
    return float(np.mean(np.logaddexp.reduce(z, axis=1) - z[np.arange(len(idx)), idx]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, shift: np.ndarray | None = None, task: str = "multi-class", alpha: float = 1.0) -> float:
    """T minimizing the NLL of logits/T + α·shift (α fixed), searched on log T in a bounded range so one
    bad fold can never give T ≤ 0 or an absurd T."""
    logits = np.asarray(logits, dtype=np.float64)
    shift = np.zeros(logits.shape[1]) if shift is None else np.asarray(shift, dtype=np.float64)
    lo, hi = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(calibrated_logits(logits, np.exp(log_t), alpha, shift), labels, task),
        bounds=(lo, hi), method="bounded", options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def fit_temperature_and_alpha(logits: np.ndarray, labels: np.ndarray, shift: np.ndarray, task: str = "multi-class") -> tuple[float, float]:
    """(T, α) minimizing the NLL of logits/T + α·shift jointly (bounded L-BFGS from T = 1, α = 1)."""
    logits = np.asarray(logits, dtype=np.float64)
    shift = np.asarray(shift, dtype=np.float64)
    if not np.any(np.abs(shift) > 1e-9):  # no prior shift to correct: α is undetermined, keep it nominal
        return fit_temperature(logits, labels, shift, task), 1.0
    bounds = [(np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])), ALPHA_BOUNDS]

    def nll(x: np.ndarray) -> float:
        return negative_log_likelihood(calibrated_logits(logits, np.exp(x[0]), x[1], shift), labels, task)

    result = minimize(nll, x0=np.array([0.0, 1.0]), method="L-BFGS-B", bounds=bounds)
    return float(np.exp(result.x[0])), float(result.x[1])


@dataclass(frozen=True, eq=False)
class Calibrator:
    """A fitted calibration, apart from any decision rule (as scikit-learn keeps its calibrators apart from
    the classifier): ``z = logits / T + α · (log π − log q)`` and its log-probabilities."""

    task: str
    temperature: float
    alpha: float  # strength of the prior correction log π − log q
    train_prior: np.ndarray  # (C,) distribution the logits were trained under (q)
    target_prior: np.ndarray  # (C,) the true class distribution (π)

    def logits(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated logits (float64): their softmax (sigmoid for multi-label) is the calibrated probability."""
        return calibrated_logits(logits, self.temperature, self.alpha, prior_shift(self.train_prior, self.target_prior, self.task))

    def log_probs(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated log-probabilities under the target prior."""
        return log_probs(self.logits(logits), self.task)


def fit_calibrator(logits: np.ndarray, labels: np.ndarray, train_prior: np.ndarray, task: str, alpha: float | None = None) -> Calibrator:
    """The one fit behind every calibration (calibrate's candidates and the blend's members): T by NLL with α
    fixed at `alpha`, or T and α jointly by NLL when `alpha` is None; target prior = these labels' prior."""
    target = class_prior(labels)
    shift = prior_shift(train_prior, target, task)
    if alpha is None:
        t, alpha = fit_temperature_and_alpha(logits, labels, shift, task)
    else:
        t = fit_temperature(logits, labels, shift, task, alpha=alpha)
    return Calibrator(task, t, alpha, np.asarray(train_prior, dtype=np.float64), target)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _TINY, 1 - _TINY)
    return np.log(p) - np.log1p(-p)
