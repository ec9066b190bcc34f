"""Blend the variants: weights over calibrated log-probabilities, found on OOF, scored by nested CV.

Each variant's logits first go through its own decision file's temperature and prior correction
(`oof/<variant>.decision.json` from `kit calibrate`, or a fitted temperature when absent), so all
members speak calibrated log-probabilities under the true class distribution. Weights come from
greedy ensemble selection with replacement (Caruana et al. 2004) maximizing the competition score
under the closed-form Bayes rule. Since the weights are tuned on the same OOF they are judged on,
the blend's reported score is nested: weights chosen on K−1 folds, scored on the held-out fold.
The decision layer (`kit.calibrate.calibrate_logits`) then runs again on the blend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.special import log_softmax

from kit.config import CompetitionConfig, MetricConfig, resolve_variants
from kit.decide import Decision, closed_form_decision, fit_temperature, rule_predictor
from kit.errors import KitError
from kit.metrics import competition_score, confusion_from_indices, scores_from_confusion
from kit.oof import OOF, check_against_folds, check_same_classes, load_oof, save_oof

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


def class_prior(labels: np.ndarray) -> np.ndarray:
    """Class frequencies (the N_k estimate of the Bayes rule), never exactly zero."""
    counts = labels.sum(axis=0).astype(np.float64)
    if labels.ndim == 2 and (labels.sum(axis=1) == 1).all():
        return np.clip(counts / counts.sum(), _TINY, None)
    return np.clip(counts / len(labels), _TINY, 1 - _TINY)


def make_scorer(labels: np.ndarray, prior: np.ndarray, weights: MetricConfig, task: str) -> Callable[[np.ndarray], float]:
    """`score(z)`: competition score of the closed-form Bayes rule on blended calibrated logits z."""
    if task == "multi-label":
        threshold = weights.b / (weights.a + weights.b + weights.w)
        t_logit = float(np.log(threshold) - np.log1p(-threshold))
        return lambda z: competition_score(labels, (z >= t_logit).astype(np.uint8), weights)
    true_idx = labels.argmax(axis=1)
    zeros = np.zeros(labels.shape[1])
    c = labels.shape[1]

    def score(z: np.ndarray) -> float:
        pred = rule_predictor(log_softmax(z, axis=1), "bayes", prior, weights)(zeros)
        per_class = scores_from_confusion(confusion_from_indices(true_idx, pred, c), weights)
        return float(np.nanmean(per_class))

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
    from kit.metrics import trivial_baseline

    scores = []
    for k in np.unique(fold):
        held, fit = fold == k, fold != k
        majority = int(labels[fit].sum(axis=0).argmax())
        scores.append(trivial_baseline(labels[held], weights, task, majority if task == "multi-class" else None))
    return float(np.mean(scores))


def nested_blend(
    zs: list[np.ndarray], labels: np.ndarray, fold: np.ndarray, weights: MetricConfig, task: str, steps: int = DEFAULT_STEPS
) -> tuple[float, dict[int, np.ndarray]]:
    """Nested CV of the weight search: for each fold k, weights from the other folds, scored on fold k."""
    scores, per_fold = [], {}
    for k in np.unique(fold).tolist():
        held, fit = fold == k, fold != k
        prior = class_prior(labels[fit])
        w, _ = caruana_weights([z[fit] for z in zs], make_scorer(labels[fit], prior, weights, task), steps)
        per_fold[int(k)] = w
        scores.append(make_scorer(labels[held], prior, weights, task)(mix([z[held] for z in zs], w)))
    return float(np.mean(scores)), per_fold


# --- the stage --------------------------------------------------------------------------------


def train_labels(cfg: CompetitionConfig, ids: np.ndarray) -> np.ndarray:
    """The training labels in the OOF's row order; KitError when the data and the OOF ids disagree."""
    from kit.data.sources import open_source

    source = open_source(cfg)
    if source.train.labels is None:
        raise KitError(f"{cfg.data.dir}: the training split has no labels; the blend needs them")
    row_of = {i: r for r, i in enumerate(np.asarray(source.train.ids, dtype=str).tolist())}
    missing = [i for i in ids.tolist() if i not in row_of]
    if missing:
        raise KitError(
            f"{cfg.data.dir}: {len(missing)} OOF ids are not in the training data (e.g. {missing[:3]}); "
            "the data changed after training: retrain"
        )
    return np.asarray(source.train.labels, dtype=np.uint8)[[row_of[i] for i in ids.tolist()]]


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


def _calibrate_blend(z: np.ndarray, labels: np.ndarray, fold: np.ndarray, prior: np.ndarray, cfg: CompetitionConfig, name: str):
    """The decision layer on the blend (part B's core); its prior correction is the identity here."""
    from kit.calibrate import calibrate_logits

    return calibrate_logits(z, labels, fold, prior, cfg, name)


def blend(
    cfg: CompetitionConfig,
    variants: list[str] | None,
    name: str = "blend",
    steps: int = DEFAULT_STEPS,
    console: Console | None = None,
) -> Path:
    """Stage `kit blend`: weights on OOF, nested-CV report, decision on the blend, submission + blended OOF + PNGs."""
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
    ids = ref.ids.astype(str)
    fold = ref.fold.astype(np.int64)
    labels = train_labels(cfg, ids)
    task = cfg.task
    prior = class_prior(labels)

    with make_progress(console) as progress:
        bar = progress.add_task("blend: calibrate members, nested weight search", total=len(names) + 2)
        members = []
        for n in names:
            members.append(load_member(cfg, n, oofs[n], labels))
            progress.advance(bar)
        zs = [m.oof_z for m in members]
        nested, per_fold_weights = nested_blend(zs, labels, fold, cfg.metric, task, steps)
        progress.advance(bar)
        weights, in_sample = caruana_weights(zs, make_scorer(labels, prior, cfg.metric, task), steps)
        progress.advance(bar)

    z = mix(zs, weights)
    decision, report = _calibrate_blend(z, labels, fold, prior, cfg, f"blend_{name}")
    trivial = trivial_fold_score(labels, fold, cfg.metric, task)
    singles = {m.name: fold_score(m.oof_z, labels, fold, cfg.metric, task) for m in members}
    chosen_nested = _nested_from_report(report, decision.rule)

    table = Table(title=f"blend '{name}': nested-CV competition score (mean over {len(np.unique(fold))} held-out folds)")
    table.add_column("what")
    table.add_column("nested-CV", justify="right")
    table.add_column("weight", justify="right")
    table.add_row("trivial baseline (majority class everywhere)", _fmt(trivial), "")
    for m, w in zip(members, weights):
        table.add_row(f"{m.name} alone (calibrated, Bayes rule; {m.decision_source})", _fmt(singles[m.name]), f"{w:.3f}")
    table.add_row("[bold]blend, Bayes rule (weights chosen on the other folds)", f"[bold]{_fmt(nested)}", "1.000")
    if chosen_nested is not None:
        table.add_row(f"blend, chosen decision '{decision.rule}' (from kit.calibrate)", _fmt(chosen_nested), "")
    console.print(table)
    best_single = max(singles, key=singles.get)
    console.print(
        f"blend {_fmt(nested)} vs best single {best_single} {_fmt(singles[best_single])} vs trivial {_fmt(trivial)} "
        f"(in-sample weight search score {_fmt(in_sample)})"
    )

    # test predictions: mean over fold models per member (already in test_z), same weights, same decision
    test_z = mix([m.test_z for m in members], weights)
    pred = decision.predict(test_z)
    oof_pred = decision.predict(z)
    provenance: dict[str, Any] = {
        "variants": names,
        "weights": {m.name: float(w) for m, w in zip(members, weights)},
        "weights_per_fold": {str(k): {m.name: float(x) for m, x in zip(members, w)} for k, w in per_fold_weights.items()},
        "member_decisions": {m.name: {"source": m.decision_source, **m.decision.to_dict()} for m in members},
        "decision": decision.to_dict(),
        "nested_cv_score": nested,
        "nested_cv_score_chosen_decision": chosen_nested,
        "single_variant_nested_cv": singles,
        "trivial_baseline": trivial,
        "in_sample_score": float(competition_score(labels, oof_pred, cfg.metric)),
        "selection": f"greedy ensemble selection with replacement, {steps} steps, Bayes rule",
    }
    from kit.data.sources import open_source

    provenance["synthetic"] = bool(open_source(cfg).synthetic)
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

    from kit.metrics import per_class_scores

    majority = np.zeros_like(labels)
    if task == "multi-class":
        majority[:, int(labels.sum(axis=0).argmax())] = 1
    pictures = [
        confusion_png(labels, oof_pred, classes, cfg.paths.submissions / f"{name}_confusion.png",
                      title=f"{name}: OOF confusion, decision '{decision.rule}' (row-normalized)"),
        per_class_png(per_class_scores(labels, oof_pred, cfg.metric), per_class_scores(labels, majority, cfg.metric), classes,
                      cfg.paths.submissions / f"{name}_per_class.png", title=f"{name}: OOF score per class vs trivial baseline"),
        reliability_png(_probs(z, 1.0, task), np.exp(decision.log_probs(z)), labels, task,
                        cfg.paths.submissions / f"{name}_reliability.png",
                        title=f"{name}: reliability before / after temperature {decision.temperature:.2f}"),
    ]
    console.print(f"wrote {out} and {out.with_suffix('.json')}")
    console.print(f"wrote {oof_path}")
    for p in pictures:
        console.print(f"wrote {p}")
    return out


def _probs(z: np.ndarray, temperature: float, task: str) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64) / temperature
    if task == "multi-label":
        return 1.0 / (1.0 + np.exp(-z))
    return np.exp(log_softmax(z, axis=1))


def _nested_from_report(report: dict, rule: str) -> float | None:
    """The nested-CV score of the chosen rule from calibrate_logits' report, where it says it."""
    if not isinstance(report, dict):
        return None
    for key in ("chosen_nested_cv", "nested_cv_score", "nested_cv"):
        value = report.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dict) and isinstance(value.get(rule), (int, float)):
            return float(value[rule])
    return None


def _fmt(x: float | None) -> str:
    return "—" if x is None or np.isnan(x) else f"{x:+.4f}"
