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

The Bayes candidates need a metric with a closed form (the linear and balanced-accuracy metrics have
one, macro-F1 has none); `candidates_for` leaves out what the metric cannot do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kit.config import CalibrateConfig
from kit.decision.calibration import class_prior, fit_temperature, fit_temperature_and_alpha, prior_shift
from kit.decision.metrics import Metric
from kit.decision.rules import Decision, closed_form_decision, fit_thresholds
from kit.decision.search import search_offsets

TRIVIAL_OFFSET = 1e6  # added to the majority class: argmax then picks it for every row
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
    name: str
    label: str
    task: str
    fit: Callable[[np.ndarray, np.ndarray, FitContext], Decision]
    needs: str | None = None  # "bayes" or "threshold": the metric must have that closed form


CANDIDATES: dict[str, Candidate] = {}


def register_candidate(name: str, label: str, task: str, needs: str | None = None):
    """Decorator: `fn(logits, labels, context) -> Decision` becomes a candidate; registration order is
    the order of simplicity within a task."""

    def wrap(fn):
        CANDIDATES[f"{task}/{name}"] = Candidate(name, label, task, fn, needs)
        return fn

    return wrap


def candidates_for(task: str, metric: Metric, names: list[str] | None = None) -> list[Candidate]:
    """The candidates for a task that this metric supports, simplest first (all, or those named)."""
    found = [c for c in CANDIDATES.values() if c.task == task and _supported(c, metric)]
    if names is None:
        return found
    known = {c.name: c for c in found}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown decision candidates {unknown} for {task} with metric '{metric.name}'; known: {list(known)}")
    return [c for c in found if c.name in names]


def candidate(task: str, name: str) -> Candidate:
    key = f"{task}/{name}"
    if key not in CANDIDATES:
        raise ValueError(f"unknown decision candidate {name!r} for {task}")
    return CANDIDATES[key]


def fit(cand: Candidate | str, logits: np.ndarray, labels: np.ndarray, context: FitContext) -> Decision:
    """Fit one candidate on labelled rows: the one entry point of calibrate and blend."""
    cand = candidate(context.task, cand) if isinstance(cand, str) else cand
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
    return True


def _base(labels: np.ndarray, ctx: FitContext, rule: str, temperature: float = 1.0, alpha: float = 1.0) -> Decision:
    decision = closed_form_decision(ctx.task, ctx.classes, ctx.train_prior, class_prior(labels), ctx.metric, temperature, alpha)
    return decision.with_(rule=rule)


def _temperature(logits, labels, ctx: FitContext) -> float:
    """T by NLL under the nominal correction (α = 1)."""
    if "t" not in ctx.cache:
        shift = prior_shift(ctx.train_prior, class_prior(labels), ctx.task)
        ctx.cache["t"] = fit_temperature(logits, labels, shift, ctx.task, alpha=1.0)
    return ctx.cache["t"]


def _temperature_alpha(logits, labels, ctx: FitContext) -> tuple[float, float]:
    """(T, α) by NLL."""
    if "t_alpha" not in ctx.cache:
        shift = prior_shift(ctx.train_prior, class_prior(labels), ctx.task)
        ctx.cache["t_alpha"] = fit_temperature_and_alpha(logits, labels, shift, ctx.task)
    return ctx.cache["t_alpha"]


# multi-class


@register_candidate("trivial", "trivial baseline (majority class everywhere)", "multi-class")
def _mc_trivial(logits, labels, ctx):
    offsets = np.zeros(len(ctx.classes))
    offsets[int(labels.sum(axis=0).argmax())] = TRIVIAL_OFFSET
    return _base(labels, ctx, "trivial", alpha=0.0).with_(bayes=False, offsets=offsets)


@register_candidate("argmax", "argmax (plain logits)", "multi-class")
def _mc_argmax(logits, labels, ctx):
    return _base(labels, ctx, "argmax", alpha=0.0).with_(bayes=False)


@register_candidate("prior_argmax", "prior-corrected argmax (nominal α = 1)", "multi-class")
def _mc_prior_argmax(logits, labels, ctx):
    return _base(labels, ctx, "prior_argmax").with_(bayes=False)


@register_candidate("bayes", "Bayes rule, T fitted (closed form)", "multi-class", needs="bayes")
def _mc_bayes(logits, labels, ctx):
    return _base(labels, ctx, "bayes", temperature=_temperature(logits, labels, ctx))


@register_candidate("bayes_alpha", "Bayes rule, T and α fitted by NLL", "multi-class", needs="bayes")
def _mc_bayes_alpha(logits, labels, ctx):
    t, alpha = _temperature_alpha(logits, labels, ctx)
    return _base(labels, ctx, "bayes_alpha", temperature=t, alpha=alpha)


@register_candidate("offsets", "per-class offsets searched against the metric", "multi-class")
def _mc_offsets(logits, labels, ctx):
    """Coordinate ascent from the calibrated argmax and (when the metric has one) from the Bayes rule;
    the start that ends higher on these rows wins."""
    t, alpha = _temperature_alpha(logits, labels, ctx)
    calibrated = _base(labels, ctx, "offsets", temperature=t, alpha=alpha)
    lp, y_idx = calibrated.log_probs(logits), labels.argmax(axis=1)
    starts = {"argmax": None}
    if ctx.metric.bayes_weights(calibrated.target_prior) is not None:
        starts["bayes"] = ctx.metric.bayes_weights(calibrated.target_prior)
    names = [f"offset[{c}]" for c in ctx.classes]
    results = {name: search_offsets(lp, y_idx, ctx.metric, w, labels.sum(axis=0), ctx.settings, names) for name, w in starts.items()}
    start = max(results, key=lambda k: (results[k].score, k == "argmax"))  # ties: the argmax start
    found = results[start]
    extra = {"start": start, "in_sample": found.score, "start_score": found.start_score,
             "starts": {k: r.score for k, r in results.items()}, "moves": len(found.history), "search": ctx.settings.search,
             "_search_trials": {k: r.trials for k, r in results.items()}}  # in memory only: the studies of the search
    return calibrated.with_(bayes=start == "bayes", offsets=found.offsets, extra=extra)


# multi-label


@register_candidate("trivial", "trivial baseline (all negative)", "multi-label")
def _ml_trivial(logits, labels, ctx):
    return _base(labels, ctx, "trivial", alpha=0.0).with_(thresholds=np.full(len(ctx.classes), NEVER))


@register_candidate("threshold_0.5", "threshold 0.5 (plain sigmoid)", "multi-label")
def _ml_half(logits, labels, ctx):
    return _base(labels, ctx, "threshold_0.5", alpha=0.0).with_(thresholds=np.full(len(ctx.classes), 0.5))


@register_candidate("closed_form", "the metric's threshold, T fitted (closed form)", "multi-label", needs="threshold")
def _ml_closed_form(logits, labels, ctx):
    return _base(labels, ctx, "closed_form", temperature=_temperature(logits, labels, ctx))


@register_candidate("closed_form_alpha", "the metric's threshold, T and α fitted by NLL", "multi-label", needs="threshold")
def _ml_closed_form_alpha(logits, labels, ctx):
    t, alpha = _temperature_alpha(logits, labels, ctx)
    return _base(labels, ctx, "closed_form_alpha", temperature=t, alpha=alpha)


@register_candidate("thresholds", "per-class thresholds fitted (calibrate.threshold_method)", "multi-label")
def _ml_thresholds(logits, labels, ctx):
    t, alpha = _temperature_alpha(logits, labels, ctx)
    decision = _base(labels, ctx, "thresholds", temperature=t, alpha=alpha)
    probs = np.exp(decision.log_probs(logits))
    thresholds = fit_thresholds(probs, labels, ctx.settings.threshold_method, ctx.metric)
    return decision.with_(thresholds=thresholds, extra={"method": ctx.settings.threshold_method})

