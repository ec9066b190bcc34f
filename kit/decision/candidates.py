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
from kit.decision.calibration import Calibrator, class_prior, fit_calibrator
from kit.decision.metrics import Metric
from kit.decision.rules import Decision, decide_calibrated, fit_thresholds
from kit.decision.search import search_offsets
from kit.registry import Registry

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
    name: str  # its display name is kit.decision.names.display_name(name)
    task: str
    fit: Callable[[np.ndarray, np.ndarray, FitContext], Decision]
    needs: str | None = None  # "bayes" or "threshold": the metric must have that closed form


CANDIDATES: Registry[Candidate] = Registry("decision candidate")  # keys "<task>/<name>", simplest first within a task


def register_candidate(name: str, task: str, needs: str | None = None):
    """Decorator: `fn(logits, labels, context) -> Decision` becomes a candidate; registration order is
    the order of simplicity within a task."""

    def wrap(fn):
        CANDIDATES.add(f"{task}/{name}", Candidate(name, task, fn, needs))
        return fn

    return wrap


def candidates_for(task: str, metric: Metric, names: list[str] | None = None) -> list[Candidate]:
    """The candidates for a task that this metric supports, simplest first (all, or those named)."""
    found = [c for c in map(CANDIDATES.get, CANDIDATES) if c.task == task and _supported(c, metric)]
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
    return CANDIDATES.get(key)


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
