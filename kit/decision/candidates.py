"""The candidate decision rules, one registry, one `fit(candidate, logits, labels, context) -> Decision`.

Candidates are listed from the simplest to the most fitted; the kit keeps the simplest one whose
nested-CV score is within one (paired) standard error of the best (kit.decision.nested.choose).

Multi-class:
  trivial       the majority class of the fitting rows everywhere
  argmax        plain logits (no temperature, no prior correction)
  prior_argmax  argmax after the nominal prior correction (α = 1)
  bayes         the metric's Bayes rule, temperature fitted by NLL, α = 1   (closed form, docs/decision.md)
  bayes_alpha   the Bayes rule with temperature and correction strength α fitted by NLL
  offsets       per-class offsets searched against the metric (coordinate ascent), started from both
                the calibrated argmax and the Bayes rule; ranges shrunk for classes with few images
Multi-label:
  trivial, threshold_0.5 (plain sigmoid), closed_form (the metric's threshold, T fitted),
  closed_form_alpha (T and α fitted), thresholds (per-class, fitted by calibrate.threshold_method)

Ordinal grades (quadratic weighted kappa), beside the above:
  rounder       cut points on the expected grade Σ k·p_k tuned against kappa (the optimised rounder), T and α fitted

The Bayes candidates need a metric with a closed form (the linear and balanced-accuracy metrics have
one, macro-F1 has none); `candidates_for` leaves out what the metric cannot do.

A metric of probabilities (log-loss) is decided by calibrated probabilities, its candidates compared by their
nested-CV log-loss (both tasks):
  trivial       the fitting rows' prior in every row
  raw           plain softmax (sigmoid) of the logits
  temperature   T fitted by NLL, no prior correction
  prior         T fitted, the nominal prior correction (α = 1) for a shifted training prior (sampler, class weights)
  temperature_alpha   T and α fitted by NLL
  bias          T and α fitted, then a per-class bias fitted by NLL
A ranking metric (ROC AUC, mAP) scores only the order of each class's column: any per-class monotone transform
(temperature and prior correction for multi-label, and any per-class bias) leaves it unchanged, so its candidates
are the scores themselves (trivial: a constant; scores: plain softmax / sigmoid; calibrated: T and α fitted,
which can move a multi-class softmax's columns) and the tuning goes to the blend (kit.ensemble).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from kit.config import CalibrateConfig
from kit.decision.calibration import Calibrator, class_prior, fit_calibrator
from kit.decision.metrics import Metric
from kit.decision.rules import Decision, decide_calibrated, fit_thresholds
from kit.decision.search import search_offsets
from kit.registry import Registry

TRIVIAL_OFFSET = 1e6  # added to the majority class: argmax then picks it for every row
TRIVIAL_TEMPERATURE = 1e300  # divides the logits below float64 resolution: the bias (the prior) alone gives every row the same value
ROUNDER_GRID = 41  # values tried per cut point between its neighbours
ROUNDER_SWEEPS = 3
NEVER = float(np.nextafter(1.0, 2.0))  # a multi-label threshold no probability reaches


@dataclass
class FitContext:
    """What every candidate needs besides the rows: task, classes, metric, the model's training prior,
    the search settings. `cache` shares the NLL fits between the candidates of one `fit_all` call."""

    task: str
    classes: tuple[str, ...]
    metric: Metric
    train_prior: np.ndarray
    settings: CalibrateConfig = field(default_factory=CalibrateConfig)
    cache: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    name: str  # its display name is kit.decision.names.display_name(name)
    task: str
    fit: Callable[[np.ndarray, np.ndarray, FitContext], Decision]
    needs: str | None = None  # "bayes" or "threshold": the metric must have that closed form; "ordinal": kappa
    kind: str = "label"  # the metric kind it decides for (kit.decision.metrics.KINDS)


# keys "<task>/<name>" (label metrics) or "<kind>/<task>/<name>", simplest first within a task and kind
CANDIDATES: Registry[Candidate] = Registry("decision candidate")


def _key(task: str, name: str, kind: str) -> str:
    return f"{task}/{name}" if kind == "label" else f"{kind}/{task}/{name}"


def register_candidate(name: str, task: str, needs: str | None = None, kind: str = "label"):
    """Decorator: `fn(logits, labels, context) -> Decision` becomes a candidate; registration order is
    the order of simplicity within a task and metric kind."""

    def wrap(fn):
        CANDIDATES.add(_key(task, name, kind), Candidate(name, task, fn, needs, kind))
        return fn

    return wrap


def candidates_for(task: str, metric: Metric, names: list[str] | None = None) -> list[Candidate]:
    """The candidates for a task that this metric supports, simplest first (all, or those named)."""
    found = [c for c in map(CANDIDATES.get, CANDIDATES) if c.task == task and c.kind == metric.kind and _supported(c, metric)]
    if names is None:
        return found
    known = {c.name: c for c in found}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown decision candidates {unknown} for {task} with metric '{metric.name}'; known: {list(known)}")
    return [c for c in found if c.name in names]


def candidate(task: str, name: str, kind: str = "label") -> Candidate:
    key = _key(task, name, kind)
    if key not in CANDIDATES:
        raise ValueError(f"unknown decision candidate {name!r} for {task}")
    return CANDIDATES.get(key)


def fit(cand: Candidate | str, logits: np.ndarray, labels: np.ndarray, context: FitContext) -> Decision:
    """Fit one candidate on labelled rows: the one entry point of calibrate and blend."""
    cand = candidate(context.task, cand, context.metric.kind) if isinstance(cand, str) else cand
    return cand.fit(np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.uint8), context)


def fit_all(cands: list[Candidate], logits: np.ndarray, labels: np.ndarray, context: FitContext) -> dict[str, Decision]:
    """Every candidate on the same rows, sharing the NLL fits (a fresh cache per call)."""
    shared = FitContext(context.task, context.classes, context.metric, context.train_prior, context.settings, cache={})
    return {c.name: fit(c, logits, labels, shared) for c in cands}


def _supported(c: Candidate, metric: Metric) -> bool:
    if c.needs == "bayes":
        return metric.bayes_weights(np.ones(2) / 2) is not None
    if c.needs == "threshold":
        return metric.threshold() is not None
    if c.needs == "ordinal":
        return metric.name == "quadratic_weighted_kappa"
    return True


def _calibrator(logits: np.ndarray, labels: np.ndarray, ctx: FitContext, alpha: float | None) -> Calibrator:
    """T by NLL with α fixed (the nominal 1), or T and α by NLL when alpha is None; shared through ctx.cache."""
    key = "t_alpha" if alpha is None else f"t@{alpha}"
    if key not in ctx.cache:
        ctx.cache[key] = fit_calibrator(logits, labels, ctx.train_prior, ctx.task, alpha)
    return ctx.cache[key]


def _fixed(labels: np.ndarray, ctx: FitContext, alpha: float) -> Calibrator:
    """No fit: T = 1 and a fixed correction strength (0: plain logits, 1: the nominal correction)."""
    return Calibrator(ctx.task, 1.0, alpha, np.asarray(ctx.train_prior, dtype=np.float64), class_prior(labels))


def _closed_form(rule: str, alpha: float | None):
    """A candidate that fits the calibration (α fixed or fitted) and keeps the metric's closed-form rule."""

    def fit_closed_form(logits, labels, ctx):
        return decide_calibrated(_calibrator(logits, labels, ctx, alpha), ctx.classes, ctx.metric, rule)

    return fit_closed_form


# multi-class


@register_candidate("trivial", "multi-class")
def _mc_trivial(logits, labels, ctx):
    offsets = np.zeros(len(ctx.classes))
    offsets[int(labels.sum(axis=0).argmax())] = TRIVIAL_OFFSET
    return decide_calibrated(_fixed(labels, ctx, 0.0), ctx.classes, ctx.metric, "trivial").with_(bayes=False, offsets=offsets)


@register_candidate("argmax", "multi-class")
def _mc_argmax(logits, labels, ctx):
    return decide_calibrated(_fixed(labels, ctx, 0.0), ctx.classes, ctx.metric, "argmax").with_(bayes=False)


@register_candidate("prior_argmax", "multi-class")
def _mc_prior_argmax(logits, labels, ctx):
    return decide_calibrated(_fixed(labels, ctx, 1.0), ctx.classes, ctx.metric, "prior_argmax").with_(bayes=False)


register_candidate("bayes", "multi-class", needs="bayes")(_closed_form("bayes", 1.0))
register_candidate("bayes_alpha", "multi-class", needs="bayes")(_closed_form("bayes_alpha", None))


@register_candidate("offsets", "multi-class")
def _mc_offsets(logits, labels, ctx):
    """Coordinate ascent from the calibrated argmax and (when the metric has one) from the Bayes rule;
    the start that ends higher on these rows wins."""
    calibrated = decide_calibrated(_calibrator(logits, labels, ctx, None), ctx.classes, ctx.metric, "offsets")
    lp, y_idx = calibrated.log_probs(logits), labels.argmax(axis=1)
    starts = {"argmax": None}
    if ctx.metric.bayes_weights(calibrated.target_prior) is not None:
        starts["bayes"] = ctx.metric.bayes_weights(calibrated.target_prior)
    names = [f"offset[{c}]" for c in ctx.classes]
    results = {name: search_offsets(lp, y_idx, ctx.metric, w, labels.sum(axis=0), ctx.settings, names=names) for name, w in starts.items()}
    start = max(results, key=lambda k: (results[k].score, k == "argmax"))  # ties: the argmax start
    found = results[start]
    extra = {"start": start, "in_sample": found.score, "start_score": found.start_score,
             "starts": {k: r.score for k, r in results.items()}, "moves": len(found.history), "search": ctx.settings.search,
             "_search_trials": {k: r.trials for k, r in results.items()}}  # in memory only: the studies of the search
    return calibrated.with_(bayes=start == "bayes", offsets=found.offsets, extra=extra)


@register_candidate("rounder", "multi-class", needs="ordinal")
def _mc_rounder(logits, labels, ctx):
    """Cut points between grades, started halfway (k + 0.5), each moved in turn over a grid between its neighbours
    to the value that scores best on these rows, for a few sweeps (the classic optimised rounder of kappa)."""
    decision = decide_calibrated(_calibrator(logits, labels, ctx, None), ctx.classes, ctx.metric, "rounder")
    expected = np.exp(decision.log_probs(logits)) @ np.arange(len(ctx.classes), dtype=np.float64)
    cuts, score = fit_cuts(expected, labels.argmax(axis=1), ctx.metric, len(ctx.classes))
    return decision.with_(bayes=False, cuts=cuts, extra={"in_sample": score})


def fit_cuts(expected: np.ndarray, y_idx: np.ndarray, metric: Metric, n_classes: int) -> tuple[np.ndarray, float]:
    """(C-1,) increasing cut points on `expected` maximising the metric of the graded rows, and that score."""
    cuts = np.arange(n_classes - 1, dtype=np.float64) + 0.5
    best = float(_graded_scores(expected, y_idx, metric, n_classes, cuts[None, :])[0])
    for _ in range(ROUNDER_SWEEPS):
        moved = False
        for j in range(n_classes - 1):
            lo = cuts[j - 1] if j > 0 else min(float(expected.min()), cuts[j]) - 1e-9
            hi = cuts[j + 1] if j < n_classes - 2 else max(float(expected.max()), cuts[j]) + 1e-9
            trial = np.repeat(cuts[None, :], ROUNDER_GRID, axis=0)
            trial[:, j] = np.linspace(lo, hi, ROUNDER_GRID)
            values = _graded_scores(expected, y_idx, metric, n_classes, trial)
            g = int(np.nanargmax(np.where(np.isnan(values), -np.inf, values)))
            if values[g] > best + 1e-12:
                best, cuts, moved = float(values[g]), trial[g].copy(), True
        if not moved:
            break
    return cuts, best


def _graded_scores(expected: np.ndarray, y_idx: np.ndarray, metric: Metric, c: int, cuts: np.ndarray) -> np.ndarray:
    """(G,) metric of the grades each row of (G, C-1) cut points gives: all confusion matrices in one bincount."""
    pred = (expected[None, :, None] > cuts[:, None, :]).sum(axis=2)  # (G, n): cuts below each row's expected grade
    g = len(cuts)
    flat = (np.arange(g, dtype=np.int64)[:, None] * (c * c) + np.asarray(y_idx, dtype=np.int64)[None, :] * c + pred).ravel()
    return metric.scores_from_confusions(np.bincount(flat, minlength=g * c * c).reshape(g, c, c))


# multi-label


@register_candidate("trivial", "multi-label")
def _ml_trivial(logits, labels, ctx):
    return decide_calibrated(_fixed(labels, ctx, 0.0), ctx.classes, ctx.metric, "trivial").with_(thresholds=np.full(len(ctx.classes), NEVER))


@register_candidate("threshold_0.5", "multi-label")
def _ml_half(logits, labels, ctx):
    return decide_calibrated(_fixed(labels, ctx, 0.0), ctx.classes, ctx.metric, "threshold_0.5").with_(thresholds=np.full(len(ctx.classes), 0.5))


register_candidate("closed_form", "multi-label", needs="threshold")(_closed_form("closed_form", 1.0))
register_candidate("closed_form_alpha", "multi-label",
                   needs="threshold")(_closed_form("closed_form_alpha", None))


@register_candidate("thresholds", "multi-label")
def _ml_thresholds(logits, labels, ctx):
    decision = decide_calibrated(_calibrator(logits, labels, ctx, None), ctx.classes, ctx.metric, "thresholds")
    probs = np.exp(decision.log_probs(logits))
    thresholds = fit_thresholds(probs, labels, ctx.settings.threshold_method, ctx.metric)
    return decision.with_(thresholds=thresholds, extra={"method": ctx.settings.threshold_method})


# probability metrics (log-loss): calibrated probabilities, both tasks


def _prior_bias(labels: np.ndarray, task: str) -> np.ndarray:
    """The bias whose softmax (sigmoid) is these rows' class prior."""
    pi = class_prior(labels)
    return np.log(pi) if task == "multi-class" else np.log(pi) - np.log1p(-pi)


def _fitting_prior(task: str):
    """The no-skill candidate of the probability and ranking metrics: the fitting rows' class prior for every image."""

    def trivial(logits, labels, ctx):
        calibrator = Calibrator(task, TRIVIAL_TEMPERATURE, 0.0, np.asarray(ctx.train_prior, dtype=np.float64), class_prior(labels))
        return decide_calibrated(calibrator, ctx.classes, ctx.metric, "trivial").with_(bias=_prior_bias(labels, task))

    return trivial


def _probability_candidates(task: str) -> None:
    def raw(logits, labels, ctx):
        return decide_calibrated(_fixed(labels, ctx, 0.0), ctx.classes, ctx.metric, "raw")

    def temperature(logits, labels, ctx):
        return decide_calibrated(_calibrator(logits, labels, ctx, 0.0), ctx.classes, ctx.metric, "temperature")

    def prior(logits, labels, ctx):
        return decide_calibrated(_calibrator(logits, labels, ctx, 1.0), ctx.classes, ctx.metric, "prior")

    def temperature_alpha(logits, labels, ctx):
        return decide_calibrated(_calibrator(logits, labels, ctx, None), ctx.classes, ctx.metric, "temperature_alpha")

    def bias(logits, labels, ctx):
        calibrator = _calibrator(logits, labels, ctx, None)
        fitted = fit_bias(calibrator.logits(logits), labels, task)
        return decide_calibrated(calibrator, ctx.classes, ctx.metric, "bias").with_(bias=fitted)

    for name, fn in (("trivial", _fitting_prior(task)), ("raw", raw), ("temperature", temperature), ("prior", prior),
                     ("temperature_alpha", temperature_alpha), ("bias", bias)):
        register_candidate(name, task, kind="probability")(fn)


def _ranking_candidates(task: str) -> None:
    def scores(logits, labels, ctx):
        return decide_calibrated(_fixed(labels, ctx, 0.0), ctx.classes, ctx.metric, "scores")

    def calibrated(logits, labels, ctx):
        return decide_calibrated(_calibrator(logits, labels, ctx, None), ctx.classes, ctx.metric, "calibrated")

    for name, fn in (("trivial", _fitting_prior(task)), ("scores", scores), ("calibrated", calibrated)):
        register_candidate(name, task, kind="ranking")(fn)


for _task in ("multi-class", "multi-label"):
    _probability_candidates(_task)
    _ranking_candidates(_task)


def fit_bias(z: np.ndarray, labels: np.ndarray, task: str, l2: float = 1e-4) -> np.ndarray:
    """(C,) per-class bias b minimising the NLL of calibrated logits z + b (plus a tiny L2 that keeps a
    multi-class bias, free up to a constant, at zero mean), by L-BFGS with the analytic gradient."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)

    def objective(b: np.ndarray) -> tuple[float, np.ndarray]:
        zb = z + b
        if task == "multi-label":
            p = 1 / (1 + np.exp(-zb))
            loss = float(np.mean(np.logaddexp(0.0, zb) - y * zb)) * z.shape[1]
        else:
            lse = logsumexp(zb, axis=1, keepdims=True)
            p = np.exp(zb - lse)
            loss = float(np.mean(lse[:, 0] - (y * zb).sum(axis=1)))
        grad = (p - y).mean(axis=0)
        return loss + l2 * float(b @ b), grad + 2 * l2 * b

    return minimize(objective, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B").x
