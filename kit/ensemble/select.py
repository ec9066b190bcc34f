"""Choose a blend (as kit.decision.select chooses one variant's decision): every (weighting, rule) pair scored
by nested CV with the whole pipeline fitted on the other folds, the simplest pair within one paired SE of the
best kept, and refitted on all folds.

A pair is keyed by the tuple (weighting, rule); `pair_label` writes it for tables and files only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kit.config import BlendConfig
from kit.decision.candidates import Candidate, FitContext
from kit.decision.metrics import trivial_baseline
from kit.decision.names import display_name
from kit.decision.nested import Choice, NestedScore, choose, nested_cv
from kit.decision.record import fitted_attrs, score_trial
from kit.ensemble.pipeline import Blend, Member, fit_blends
from kit.ensemble.weights import RANK_AVERAGE, WEIGHTINGS

Pair = tuple[str, str]  # (weighting, rule)
BLEND_WEIGHTINGS = [w for w in WEIGHTINGS.names() if w != RANK_AVERAGE]  # simplest first: the stacker fits the most


def blend_weightings(kind: str) -> list[str]:
    """The weightings a blend compares: for a ranking metric also the rank average (equal weights on ranks)."""
    return WEIGHTINGS.names() if kind == "ranking" else list(BLEND_WEIGHTINGS)
BLEND_RULES = {"multi-class": ["argmax", "bayes", "offsets"], "multi-label": ["threshold_0.5", "closed_form", "thresholds"]}
# probability and ranking metrics: the same rules for both tasks (the mixture's members are already calibrated)
BLEND_RULES_BY_KIND = {"probability": ["raw", "temperature_alpha", "bias"], "ranking": ["scores"]}


def blend_rules(task: str, kind: str) -> list[str]:
    """The decision rules a blend compares on its mixture, for a task and a metric kind."""
    return BLEND_RULES[task] if kind == "label" else BLEND_RULES_BY_KIND[kind]


def pair_label(pair: Pair) -> str:
    """How a pair is written in tables, reports and studies: "weighting + rule"."""
    return f"{pair[0]} + {pair[1]}"


def simplicity_order(weightings: list[str], rules: list[str]) -> list[Pair]:
    """Every pair, simplest first: by the sum of the two ranks, then the simpler weighting."""
    pairs = [(w, r) for w in weightings for r in rules]
    return sorted(pairs, key=lambda p: (weightings.index(p[0]) + rules.index(p[1]), weightings.index(p[0])))


@dataclass(frozen=True)
class BlendSelection:
    pairs: list[Pair]  # simplest first
    scores: dict[Pair, NestedScore]  # nested CV per pair
    trivial: NestedScore  # the fitting folds' majority class (multi-label: all negative) on each held-out fold
    choice: Choice
    final: Blend  # the chosen pair refitted on all folds
    per_fold: dict[int, dict[Pair, Blend]]  # what each outer fold fitted

    @property
    def chosen(self) -> Pair:
        return self.choice.chosen  # type: ignore[return-value]


def select_blend(
    members: list[Member],
    labels: np.ndarray,
    fold: np.ndarray,
    context: FitContext,
    weightings: list[str],
    rules: list[Candidate],
    *,
    on_fit: Callable[[], None] | None = None,
    blend_settings: BlendConfig | None = None,
) -> BlendSelection:
    """Nested CV of every (weighting, rule) pair, the one-SE choice, and the chosen pair's refit on all rows."""
    metric, task = context.metric, context.task
    per_fold: dict[int, dict[Pair, Blend]] = {}

    def fit_rows(rows: np.ndarray, ws: list[str] = weightings, rs: list[Candidate] = rules) -> dict[Pair, Blend]:
        fitted = fit_blends(members, labels, rows, ws, rs, context, blend_settings=blend_settings)
        if on_fit is not None:
            on_fit()
        return fitted

    def evaluate(fitted: dict[Pair, Blend], held: np.ndarray) -> dict:
        held_logits = [m.logits[held] for m in members]
        scores: dict = {pair: metric.score(labels[held], b.predict(held_logits)) for pair, b in fitted.items()}
        majority = int(labels[~held].sum(axis=0).argmax())  # the fitting folds' majority (multi-label: unused)
        prior = labels[~held].mean(axis=0)  # probability and ranking metrics: the fitting folds' prior in every row
        scores["trivial"] = trivial_baseline(labels[held], metric, task, majority, prior=prior)
        return scores

    scores = nested_cv(fit_rows, evaluate, fold, on_fold=lambda k, fitted: per_fold.__setitem__(k, fitted))
    trivial = scores.pop("trivial")
    pairs = simplicity_order(weightings, [r.name for r in rules])
    choice = choose(scores, pairs, context.settings.selection, metric.direction)
    weighting, rule = choice.chosen
    final = fit_rows(np.ones(len(labels), dtype=bool), [weighting], [r for r in rules if r.name == rule])[(weighting, rule)]
    return BlendSelection(pairs, scores, trivial, choice, final, per_fold)


def blend_trials(selection: BlendSelection, in_sample: float) -> list:
    """One Optuna trial per (weighting, rule) and one for the trivial baseline (kit.decision.record): the nested-CV
    mean as value, per-fold held-out scores as intermediate values, each fold's weights and fitted T and α
    (the members' and the rule's) as attributes; the chosen pair also carries its refit and in-sample score."""
    from optuna.distributions import CategoricalDistribution

    folds = list(selection.per_fold)
    dists = {"weighting": CategoricalDistribution(sorted({w for w, _ in selection.pairs} | {"none"})),
             "rule": CategoricalDistribution(sorted({r for _, r in selection.pairs} | {"trivial"}))}
    trials = [score_trial({"weighting": "none", "rule": "trivial"}, dists, selection.trivial, folds, selection.choice, "trivial",
                          candidate="trivial", label=display_name("trivial"))]
    for pair in selection.pairs:
        attrs: dict = {"candidate": pair_label(pair), "label": display_name(pair)}
        for k, blends in selection.per_fold.items():
            b = blends[pair]
            attrs.update({f"fold{k}.{key}": value for key, value in _combination(b).items()})
            attrs[f"fold{k}.members"] = {m: {"temperature": round(float(c.temperature), 6), "alpha": round(float(c.alpha), 6)}
                                         for m, c in zip(b.members, b.calibrations)}
            attrs.update(fitted_attrs(b.decision, prefix=f"fold{k}."))
        if pair == selection.chosen:
            final = selection.final
            attrs.update(in_sample=in_sample, **fitted_attrs(final.decision, prefix="refit."),
                         **{f"refit.{key}": value for key, value in _combination(final).items()})
        trials.append(score_trial({"weighting": pair[0], "rule": pair[1]}, dists, selection.scores[pair], folds, selection.choice, pair, **attrs))
    return trials


def _combination(b: Blend) -> dict:
    """A blend's weights (or, for the stacker, its chosen C per regression) as trial attributes."""
    if b.stacker is not None:
        return {"weights": None, "stack_c": list(b.stacker.chosen_c)}
    return {"weights": [float(x) for x in b.weights]}
