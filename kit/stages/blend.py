"""Blend the variants: weights over calibrated log-probabilities, found on OOF, scored by nested CV.

Each variant's logits first go through its own decision file's temperature and prior correction
(`oof/<variant>.decision.json` from `kit calibrate`, or a temperature fitted here when absent), so all
members speak calibrated log-probabilities under the true class distribution. Weights come from
greedy ensemble selection with replacement (Caruana et al. 2004) maximizing the competition score
under the closed-form Bayes rule; putting all weight on the best member is the fallback.
The decision layer (`kit.stages.calibrate.calibrate_logits`) then runs on the blend and names its rule.

Weights and rules are tuned on the OOF they are judged on, so every blend score is fully nested:
for each fold k the weights *and* the rule are fitted on the other folds and scored on fold k.
The (weights, rule) pair with the best nested score is refitted on all folds for the submission;
ties go to the simpler choice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.special import log_softmax

from kit.artifacts import OOF, check_against_folds, check_same_classes, load_oof, save_oof
from kit.config import CompetitionConfig, MetricConfig, resolve_variants
from kit.decision.metrics import competition_score, score_from_indices
from kit.decision.rules import Decision, class_prior, closed_form_decision, fit_temperature, fit_thresholds, rule_predictor
from kit.errors import KitError

DEFAULT_STEPS = 25
_TINY = 1e-12


@dataclass(frozen=True, eq=False)
class Member:
    """One variant as the blender sees it: calibrated logits for OOF rows and for each fold model's test rows."""

    name: str
    decision: Decision
    oof_z: np.ndarray  # (n, C) calibrated logits
    test_z: np.ndarray  # (m, C) calibrated logits, mean over the K fold models
    test_z_folds: np.ndarray  # (K, m, C)
    decision_source: str  # "kit calibrate" or "fitted temperature"


def calibrated_logits(decision: Decision, logits: np.ndarray) -> np.ndarray:
    """Logits whose softmax (multi-class) or sigmoid (multi-label) is the decision's calibrated probability.

    Multi-class: the calibrated log-probabilities themselves. Multi-label: log p − log(1 − p), so a
    weighted sum of members stays a per-class logit.
    """
    lp = decision.log_probs(logits)
    if decision.task == "multi-label":
        return lp - np.log(np.clip(-np.expm1(lp), _TINY, None))
    return lp


def make_scorer(labels: np.ndarray, prior: np.ndarray, weights: MetricConfig, task: str) -> Callable[[np.ndarray], float]:
    """`score(z)`: competition score of the closed-form Bayes rule on blended calibrated logits z."""
    if task == "multi-label":
        threshold = weights.b / (weights.a + weights.b + weights.w)
        t_logit = float(np.log(threshold) - np.log1p(-threshold))
        return lambda z: competition_score(labels, (z >= t_logit).astype(np.uint8), weights)
    true_idx = labels.argmax(axis=1)
    c = labels.shape[1]
    pi = np.clip(np.asarray(prior, dtype=np.float64), _TINY, None)
    scale = ((weights.a + weights.b + weights.w) / pi).astype(np.float32)
    bias = (-weights.b / pi).astype(np.float32)

    def score(z: np.ndarray) -> float:
        # argmax_k ((a+b+w)·p_k − b)/π_k with p = softmax(z), in float32 (the search's inner loop)
        p = np.exp(z - z.max(axis=1, keepdims=True), dtype=np.float32)
        p /= p.sum(axis=1, keepdims=True)
        return score_from_indices(true_idx, np.argmax(p * scale + bias, axis=1), c, weights)

    return score


def caruana_weights(zs: list[np.ndarray], score: Callable[[np.ndarray], float], steps: int = DEFAULT_STEPS) -> tuple[np.ndarray, float]:
    """Greedy ensemble selection with replacement: add the member that most improves the score, `steps` times;
    keep the best bag seen (so the result is never below the best single member on these rows)."""
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
    return best_counts / best_counts.sum(), float(best_score)


def mix(zs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted sum of the members' calibrated logits."""
    out = np.zeros_like(zs[0], dtype=np.float32)
    for z, w in zip(zs, weights):
        if w > 0:
            out += np.float32(w) * z
    return out


def fold_score(z: np.ndarray, labels: np.ndarray, fold: np.ndarray, weights: MetricConfig, task: str) -> float:
    """Mean over folds of the held-out fold's score under the closed-form rule (the prior of the other folds)."""
    scores = []
    for k in np.unique(fold):
        held, fit = fold == k, fold != k
        scores.append(make_scorer(labels[held], class_prior(labels[fit]), weights, task)(z[held]))
    return float(np.mean(scores))


def trivial_fold_score(labels: np.ndarray, fold: np.ndarray, weights: MetricConfig, task: str) -> float:
    """The trivial baseline on the same held-out folds (majority class of the other folds everywhere)."""
    from kit.decision.metrics import trivial_baseline

    scores = []
    for k in np.unique(fold):
        held, fit = fold == k, fold != k
        majority = int(labels[fit].sum(axis=0).argmax())
        scores.append(trivial_baseline(labels[held], weights, task, majority if task == "multi-class" else None))
    return float(np.mean(scores))


def select_single(zs: list[np.ndarray], score: Callable[[np.ndarray], float]) -> tuple[np.ndarray, float]:
    """All weight on the member that scores best: the fallback when greedy weights do not generalize."""
    scores = [score(z) for z in zs]
    weights = np.zeros(len(zs))
    weights[int(np.argmax(scores))] = 1.0
    return weights, float(max(scores))


def nested_blend(
    zs: list[np.ndarray],
    labels: np.ndarray,
    fold: np.ndarray,
    weights: MetricConfig,
    task: str,
    steps: int = DEFAULT_STEPS,
    select: Callable | None = None,
) -> tuple[float, dict[int, np.ndarray]]:
    """Nested CV of a weight search (`select(zs, score)`, default greedy selection): for each fold k,
    weights from the other folds, scored on fold k under the closed-form rule."""
    select = select or partial(caruana_weights, steps=steps)
    scores, per_fold = [], {}
    for k in np.unique(fold).tolist():
        held, fit = fold == k, fold != k
        prior = class_prior(labels[fit])
        w, _ = select([z[fit] for z in zs], make_scorer(labels[fit], prior, weights, task))
        per_fold[int(k)] = w
        scores.append(make_scorer(labels[held], prior, weights, task)(mix([z[held] for z in zs], w)))
    return float(np.mean(scores)), per_fold


# --- the stage --------------------------------------------------------------------------------


def load_member(cfg: CompetitionConfig, name: str, oof: OOF, labels: np.ndarray) -> Member:
    """Calibrate one variant with its saved decision, or with a temperature fitted here when there is none."""
    path = cfg.paths.oof / f"{name}.decision.json"
    classes = oof.classes.astype(str).tolist()
    if path.is_file():
        decision, source = Decision.load(path), "kit calibrate"
        if list(decision.classes) != classes:
            raise KitError(f"{path}: classes differ from {name}.npz; rerun `kit calibrate --variant {name}`")
    else:
        target = class_prior(labels)
        t = fit_temperature(oof.logits, labels, oof.train_prior, target, cfg.task)
        decision = closed_form_decision(cfg.task, classes, oof.train_prior, target, cfg.metric, temperature=t)
        source = "fitted temperature"
    test_folds = np.stack([calibrated_logits(decision, t) for t in oof.test_logits]).astype(np.float32)
    return Member(
        name=name,
        decision=decision,
        oof_z=calibrated_logits(decision, oof.logits).astype(np.float32),
        test_z=test_folds.mean(axis=0),
        test_z_folds=test_folds,
        decision_source=source,
    )


def _calibrate_blend(z, labels, fold, prior, cfg: CompetitionConfig, name: str, classes: list[str], console: Console):
    """The decision layer on the blend (part B's core). The members are already calibrated, so the
    blend's training prior is the label distribution itself and the prior correction is the identity;
    the temperature is refitted (a weighted sum of log-probabilities is not calibrated by itself)."""
    from kit.stages.calibrate import calibrate_logits

    return calibrate_logits(z, labels, fold, prior, cfg, name, classes, console)


def identity_decision(task: str, classes: list[str], prior: np.ndarray, weights: MetricConfig) -> Decision:
    """The closed-form rule on already calibrated log-probabilities: temperature 1, no prior shift."""
    return closed_form_decision(task, classes, prior, prior, weights, temperature=1.0)


def refit_rule(rule: str, z_fit: np.ndarray, y_fit: np.ndarray, classes: list[str], cfg: CompetitionConfig, study_name: str) -> Decision:
    """Fit one rule of the decision layer on some rows of the blend (the nested CV of the blend's decision).

    Rules are those of `kit.stages.calibrate` plus "identity" (the Bayes rule at temperature 1).
    """
    task, weights = cfg.task, cfg.metric
    prior = class_prior(y_fit)
    base = identity_decision(task, classes, prior, weights)
    if rule == "identity":
        return base
    if rule in ("argmax", "prior_argmax"):
        return base.with_(rule=rule)
    if rule == "threshold_0.5":
        return base.with_(thresholds=np.full(len(classes), 0.5))
    decision = base.with_(temperature=fit_temperature(z_fit, y_fit, prior, prior, task))
    if rule in ("bayes", "closed_form"):
        return decision
    if rule == "fitted":
        probs = np.exp(decision.log_probs(z_fit))
        return decision.with_(thresholds=fit_thresholds(probs, y_fit, cfg.calibrate.threshold_method, weights))
    if rule == "bayes_offsets":
        from kit.stages.calibrate import tune_offsets

        predictor = rule_predictor(decision.log_probs(z_fit), "bayes", prior, weights)
        y_idx, c = y_fit.argmax(axis=1), len(classes)

        def score(offsets: np.ndarray) -> float:
            return score_from_indices(y_idx, predictor(offsets), c, weights)

        offsets, _, _ = tune_offsets(score, classes, cfg.calibrate, cfg.seed, study_name, "bayes_offsets")
        return decision.with_(rule="bayes_offsets", offsets=offsets)
    raise ValueError(f"unknown rule {rule!r}")


def nested_decision_score(
    rule: str, zs: list[np.ndarray], labels: np.ndarray, fold: np.ndarray, per_fold_weights: dict[int, np.ndarray],
    classes: list[str], cfg: CompetitionConfig, name: str,
) -> float:
    """Fully nested score of the blend under `rule`: weights and the rule both fitted on K−1 folds."""
    scores = []
    for k, w in per_fold_weights.items():
        held, fit = fold == k, fold != k
        decision = refit_rule(rule, mix([z[fit] for z in zs], w), labels[fit], classes, cfg, f"{name}/nested-{k}")
        scores.append(competition_score(labels[held], decision.predict(mix([z[held] for z in zs], w)), cfg.metric))
    return float(np.mean(scores))


def own_decision_score(cfg: CompetitionConfig, name: str) -> tuple[str, float] | None:
    """(rule, nested-CV score) of a variant's own decision from `kit calibrate`'s report, when there is one."""
    path = cfg.paths.oof / f"{name}.calibration.json"
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
        return str(report["chosen"]), float(report["chosen_nested_cv"])
    except (ValueError, KeyError, TypeError):
        raise KitError(f"{path}: not a calibration report of `kit calibrate`; rerun `kit calibrate --variant {name}`") from None


def blend(
    cfg: CompetitionConfig,
    variants: list[str] | None,
    name: str = "blend",
    steps: int = DEFAULT_STEPS,
    console: Console | None = None,
) -> Path:
    """Stage `kit blend`: weights on OOF, nested-CV report, decision on the blend, submission + blended OOF + PNGs."""
    from kit.data.sources import open_source
    from kit.decision.metrics import per_class_scores
    from kit.plots import confusion_png, per_class_png, reliability_png
    from kit.progress import make_progress
    from kit.submission import write_submission

    console = console or Console()
    if not name or any(ch in name for ch in "/\\ "):
        raise KitError(f"--name '{name}': use a plain file name (no spaces or slashes)")
    names = resolve_variants(variants, cfg)
    if len(set(names)) != len(names):
        raise KitError(f"--variants lists a variant twice ({names}); list each once")
    oofs = {n: load_oof(cfg.paths.oof / f"{n}.npz") for n in names}
    check_same_classes(oofs)
    for n, oof in oofs.items():
        check_against_folds(oof, cfg.folds.path, cfg.paths.oof / f"{n}.npz")
    ref = oofs[names[0]]
    classes = ref.classes.astype(str).tolist()
    fold = ref.fold.astype(np.int64)
    source = open_source(cfg)
    if list(source.classes) != classes:
        raise KitError(
            f"{cfg.paths.oof / (names[0] + '.npz')}: classes differ from the data source {cfg.data.dir} "
            f"({classes[:3]}… vs {list(source.classes)[:3]}…); retrain on the current data"
        )
    labels = source.train_labels_for(ref.ids, cfg.data.dir)
    task, metric = cfg.task, cfg.metric
    prior = class_prior(labels)

    with make_progress(console) as progress:
        bar = progress.add_task("blend: calibrate members, weights (nested and all folds)", total=len(names) + 2)
        members = []
        for n in names:
            members.append(load_member(cfg, n, oofs[n], labels))
            progress.advance(bar)
        zs = [m.oof_z for m in members]
        # greedy weights, and all weight on the best member as the fallback when greedy weights do not generalize
        weightings = {"greedy selection": partial(caruana_weights, steps=steps), "best single member": select_single}
        per_fold = {}
        nested: dict[tuple[str, str], float] = {}
        for key, select in weightings.items():
            nested[(key, "identity")], per_fold[key] = nested_blend(zs, labels, fold, metric, task, select=select)
        progress.advance(bar)
        final = {key: select(zs, make_scorer(labels, prior, metric, task)) for key, select in weightings.items()}
        progress.advance(bar)

    # the decision layer on the greedy blend says which rule family to try; every (weights, rule) pair is
    # then scored fully nested (weights and rule both fitted on the other folds) and the best one is used
    greedy_z = mix(zs, final["greedy selection"][0])
    _, report = _calibrate_blend(greedy_z, labels, fold, prior, cfg, f"blend_{name}", classes, console)
    tuned_rule = str(report["chosen"])  # kit.stages.calibrate's rule key (multi-label decisions all say "thresholds")
    if tuned_rule != "identity":
        with make_progress(console) as progress:
            bar = progress.add_task(f"blend: nested CV of rule '{tuned_rule}'", total=len(weightings))
            for key in weightings:
                nested[(key, tuned_rule)] = nested_decision_score(
                    tuned_rule, zs, labels, fold, per_fold[key], classes, cfg, f"blend_{name}/{key.split()[0]}"
                )
                progress.advance(bar)
    simpler = {"best single member": 1, "greedy selection": 0}
    weighting, chosen_rule = max(nested, key=lambda kr: (nested[kr], kr[1] == "identity", simpler[kr[0]]))  # ties: simpler
    weights, in_sample = final[weighting]
    per_fold_weights = per_fold[weighting]
    score = nested[(weighting, chosen_rule)]
    z = mix(zs, weights)
    decision = refit_rule(chosen_rule, z, labels, classes, cfg, f"blend_{name}/final")

    trivial = trivial_fold_score(labels, fold, metric, task)
    singles = {m.name: fold_score(m.oof_z, labels, fold, metric, task) for m in members}
    own = {m.name: own_decision_score(cfg, m.name) for m in members}
    _print_report(console, name, task, fold, trivial, members, weights, singles, own, nested, (weighting, chosen_rule))
    # a single variant at its best: the closed-form rule here, or its own decision from `kit calibrate`
    single_best = {n: max(v, own[n][1]) if own[n] is not None else v for n, v in singles.items()}
    best_single = max(single_best, key=single_best.get)
    console.print(
        f"blend {_fmt(score)} vs best single variant {best_single} {_fmt(single_best[best_single])} vs trivial baseline "
        f"{_fmt(trivial)} (nested CV; the weight search's in-sample score was {_fmt(in_sample)})",
        soft_wrap=True,
    )

    # test predictions: mean over fold models per member (already in test_z), same weights, same decision
    test_z = mix([m.test_z for m in members], weights)
    pred = decision.predict(test_z)
    oof_pred = decision.predict(z)
    provenance: dict[str, Any] = {
        "variants": names,
        "weights": {m.name: float(w) for m, w in zip(members, weights)},
        "weights_per_fold": {str(k): {m.name: float(x) for m, x in zip(members, w)} for k, w in per_fold_weights.items()},
        "weighting": weighting,
        "selection": f"greedy ensemble selection with replacement ({steps} steps) or the best single member, and the "
        "closed-form rule or the decision layer's rule, whichever pair scores higher in nested CV",
        "member_decisions": {m.name: {"source": m.decision_source, **m.decision.to_dict()} for m in members},
        "decision_rule": chosen_rule,
        "nested_cv_by_choice": {f"{w} + {r}": v for (w, r), v in nested.items()},
        "decision": decision.to_dict(),
        "nested_cv_score": score,
        "single_variant_nested_cv": singles,
        "best_single_variant": {"variant": best_single, "nested_cv": single_best[best_single]},
        "single_variant_own_decision_nested_cv": {k: (None if v is None else {"rule": v[0], "nested_cv": v[1]}) for k, v in own.items()},
        "decision_layer_on_greedy_blend": {k: report.get(k) for k in ("chosen", "chosen_nested_cv", "nested_cv", "temperature")},
        "trivial_baseline": trivial,
        "in_sample_score": float(competition_score(labels, oof_pred, metric)),
        "synthetic": bool(source.synthetic),
    }
    out = write_submission(pred, ref.test_ids.astype(str), classes, cfg, name, provenance)

    blended = OOF(
        classes=ref.classes,
        ids=ref.ids,
        fold=ref.fold,
        logits=z.astype(np.float32),
        test_ids=ref.test_ids,
        test_logits=np.stack([mix([m.test_z_folds[k] for m in members], weights) for k in range(ref.n_folds)]).astype(np.float32),
        train_prior=prior,
    )
    oof_path = cfg.paths.oof / f"blend_{name}.npz"
    save_oof(oof_path, blended, {"blend": name, **{k: v for k, v in provenance.items() if k != "member_decisions"}})
    decision.save(cfg.paths.oof / f"blend_{name}.decision.json")

    majority = np.zeros_like(labels)
    if task == "multi-class":
        majority[:, int(labels.sum(axis=0).argmax())] = 1
    # the picture shows the NLL temperature of the final blend even when the chosen rule keeps T = 1
    after_t = decision.temperature if decision.temperature != 1.0 else fit_temperature(z, labels, prior, prior, task)
    pictures = [
        confusion_png(labels, oof_pred, classes, cfg.paths.submissions / f"{name}_confusion.png",
                      title=f"{name}: OOF confusion, decision '{chosen_rule}' (row-normalized)"),
        per_class_png(per_class_scores(labels, oof_pred, metric), per_class_scores(labels, majority, metric), classes,
                      cfg.paths.submissions / f"{name}_per_class.png",
                      title=f"{name}: OOF score per class, decision '{chosen_rule}' (in-sample) vs trivial baseline"),
        reliability_png(_probs(z, 1.0, task), _probs(z, after_t, task), labels, task,
                        cfg.paths.submissions / f"{name}_reliability.png",
                        title=f"{name}: OOF reliability before / after temperature {after_t:.2f}"),
    ]
    console.print(f"wrote {out} and {out.with_suffix('.json')}", soft_wrap=True)
    console.print(f"wrote {oof_path}", soft_wrap=True)
    for p in pictures:
        console.print(f"wrote {p}", soft_wrap=True)
    return out


def _print_report(console, name, task, fold, trivial, members, weights, singles, own, nested, chosen) -> None:
    table = Table(title=f"blend '{name}': competition score, nested CV (mean over {len(np.unique(fold))} held-out folds)")
    table.add_column("what")
    table.add_column("nested-CV", justify="right")
    table.add_column("own decision (kit calibrate)", justify="right")
    table.add_column("weight", justify="right")
    multi_label = task == "multi-label"
    rule = "cost rule p >= b/(a+b+w)" if multi_label else "Bayes rule"
    trivial_what = "all negative" if multi_label else "majority class everywhere"
    table.add_row(f"trivial baseline ({trivial_what})", _fmt(trivial), "", "", style="dim")
    for m, w in zip(members, weights):
        mine = own[m.name]
        table.add_row(
            f"{m.name} alone: calibrated ({m.decision_source}), {rule}", _fmt(singles[m.name]),
            "—" if mine is None else f"{_fmt(mine[1])} ({mine[0]})", f"{w:.3f}",
        )
    for (weighting, key), value in nested.items():
        mark = "[bold green]" if (weighting, key) == chosen else ""
        what = f"{rule} (T = 1)" if key == "identity" else f"rule '{key}' refitted per fold"
        table.add_row(f"{mark}blend: weights by {weighting}, {what}", f"{mark}{_fmt(value)}", "", "")
    console.print(table)
    console.print(
        "blend rows: weights and decision fitted on the other folds, scored on the held-out fold; the chosen one "
        "(green) is refitted on all folds for the submission", soft_wrap=True,
    )


def _probs(z: np.ndarray, temperature: float, task: str) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64) / temperature
    if task == "multi-label":
        return 1.0 / (1.0 + np.exp(-z))
    return np.exp(log_softmax(z, axis=1))


def _fmt(x: float | None) -> str:
    return "—" if x is None or np.isnan(x) else f"{x:+.4f}"
