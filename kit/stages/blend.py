"""Stage `kit blend`: ensemble the variants' OOF logits, decide, write the submission.

Inside each outer fold the whole pipeline is fitted on the other folds (kit.ensemble.pipeline): every
member's temperature and prior-correction strength α by NLL, the weights (best single member, equal,
or greedy selection), and a decision candidate on the mixture; the held-out fold scores it. So the
blend's nested score has no leak, and no decision file of `kit calibrate` is read. The simplest
(weighting, rule) pair within one paired SE of the best is refitted on all folds; the test set gets
the K fold models' logits aggregated as kit.ensemble.aggregate.TEST_AGGREGATION says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from kit.artifacts import OOF, check_against_folds, check_same_classes, load_oof, oof_fingerprint, read_meta, require_metric, save_oof
from kit.config import CompetitionConfig, resolve_variants
from kit.decision.calibration import class_prior
from kit.decision.candidates import FitContext, candidates_for
from kit.decision.metrics import Metric, build_metric, trivial_baseline, trivial_prediction
from kit.decision.nested import as_report, choose, nested_cv
from kit.decision.record import fitted_attrs, score_trial, study_summary, write_study
from kit.decision.select import check_nested_inputs
from kit.ensemble.aggregate import TEST_AGGREGATION, aggregate_predict
from kit.ensemble.pipeline import Blend, Member, fit_blends
from kit.ensemble.weights import WEIGHTINGS
from kit.errors import KitError
from kit.studies import exclusive_studies, open_storage

BLEND_RULES = {"multi-class": ["argmax", "bayes", "offsets"], "multi-label": ["threshold_0.5", "closed_form", "thresholds"]}


def pair_key(weighting: str, rule: str) -> str:
    return f"{weighting} + {rule}"


def blend(cfg: CompetitionConfig, variants: list[str] | None, name: str = "blend", console: Console | None = None) -> Path:
    """Nested-CV table of every (weighting, rule), the chosen blend refitted on all folds, the submission,
    the blended OOF, its decision, an Optuna study and three PNGs."""
    from kit.data.sources import open_source

    console = console or Console()
    if not name or any(ch in name for ch in "/\\ "):
        raise KitError(f"--name '{name}': use a plain file name (no spaces or slashes)")
    names = resolve_variants(variants, cfg)
    if len(set(names)) != len(names):
        raise KitError(f"--variants lists a variant twice ({names}); list each once")
    metric = build_metric(cfg.metric)
    paths = {n: cfg.paths.oof / f"{n}.npz" for n in names}
    oofs = {n: load_oof(p) for n, p in paths.items()}
    check_same_classes(oofs)
    for n, oof in oofs.items():
        check_against_folds(oof, cfg.folds.path, paths[n])
        require_metric((read_meta(paths[n].with_suffix(".json")) or {}).get("metric"), metric.params(), paths[n].with_suffix(".json"),
                       f"kit train --variant {n}", cfg.source_file)
    ref = oofs[names[0]]
    classes = ref.classes.astype(str).tolist()
    fold = ref.fold.astype(np.int64)
    source = open_source(cfg)
    if list(source.classes) != classes:
        raise KitError(
            f"{paths[names[0]]}: classes differ from the data source {cfg.data.dir} "
            f"({classes[:3]}… vs {list(source.classes)[:3]}…); retrain on the current data"
        )
    labels = source.train_labels_for(ref.ids, cfg.data.dir)
    for n in names:
        check_nested_inputs(oofs[n].logits, labels, fold, classes, cfg.task, str(paths[n]))
    with exclusive_studies(cfg.calibrate.storage, [f"blend/{name}"]):
        storage = open_storage(cfg.calibrate.storage)  # checked before the long computation
        return _fit_and_write(cfg, name, names, oofs, labels, bool(source.synthetic), metric, storage, console)


def _fit_and_write(cfg: CompetitionConfig, name: str, names: list[str], oofs: dict[str, OOF], labels: np.ndarray, synthetic: bool,
                   metric: Metric, storage, console: Console) -> Path:
    """The nested CV of every (weighting, rule), the refit of the chosen pair, and every file the stage writes."""
    from kit.plots import confusion_png, per_class_png, reliability_png
    from kit.progress import make_progress
    from kit.submission import write_submission

    ref = oofs[names[0]]
    classes = ref.classes.astype(str).tolist()
    fold = ref.fold.astype(np.int64)
    task = cfg.task
    members = [Member(n, oofs[n].logits, oofs[n].test_logits, oofs[n].train_prior) for n in names]
    context = FitContext(task, tuple(classes), metric, np.ones(len(classes)) / len(classes), cfg.calibrate)
    rules = candidates_for(task, metric, BLEND_RULES[task])
    weightings = list(WEIGHTINGS)
    simplicity = sorted(
        (pair_key(w, r.name) for w in weightings for r in rules),
        key=lambda key: _pair_rank(key, weightings, [r.name for r in rules]),
    )
    per_fold: dict[int, dict[tuple[str, str], Blend]] = {}
    n_folds = len(np.unique(fold))

    with make_progress(console) as progress:
        bar = progress.add_task(f"blend {name}: {len(members)} members, {len(weightings)} weightings × {len(rules)} rules × {n_folds} folds",
                                total=n_folds + 1)

        def fit_rows(rows: np.ndarray) -> dict[tuple[str, str], Blend]:
            fitted = fit_blends(members, labels, rows, weightings, rules, context)
            progress.advance(bar)
            return fitted

        def evaluate(fitted: dict[tuple[str, str], Blend], held: np.ndarray) -> dict[str, float]:
            held_logits = [m.logits[held] for m in members]
            scores = {pair_key(w, r): metric.score(labels[held], b.predict(held_logits)) for (w, r), b in fitted.items()}
            majority = int(labels[~held].sum(axis=0).argmax())  # the fitting folds' majority (multi-label: unused)
            scores["trivial"] = trivial_baseline(labels[held], metric, task, majority)
            return scores

        nested = nested_cv(fit_rows, evaluate, fold, on_fold=lambda k, fitted: per_fold.__setitem__(k, fitted))
        trivial = nested.pop("trivial")
        choice = choose(nested, simplicity, cfg.calibrate.selection)
        weighting, rule = choice.chosen.split(" + ")
        final = fit_blends(members, labels, np.ones(len(labels), dtype=bool), [weighting], candidates_for(task, metric, [rule]), context)
        final_blend = final[(weighting, rule)]
        progress.advance(bar)

    singles = _own_decisions(cfg, names, oofs)
    _print_table(console, name, metric.describe(), n_folds, nested, choice, simplicity, trivial, singles)
    score = nested[choice.chosen]
    best_single = max((s for s in singles.values() if s is not None), key=lambda s: s["nested_cv"], default=None)
    console.print(
        f"blend {score.mean:+.4f} ± {score.se:.4f} ({choice.chosen}; {choice.rule})"
        + (f" vs best single variant {best_single['variant']} {best_single['nested_cv']:+.4f}" if best_single else "")
        + f" vs trivial baseline {trivial.mean:+.4f} (nested CV)",
        soft_wrap=True, highlight=False,
    )

    oof_logits = [m.logits for m in members]
    oof_pred = final_blend.predict(oof_logits)
    test_pred = aggregate_predict(final_blend, [m.test_logits for m in members])
    provenance: dict[str, Any] = {
        "variants": names,
        "weights": {m: float(w) for m, w in zip(names, final_blend.weights)},
        "weighting": weighting,
        "decision_rule": rule,
        "selection": choice.rule,
        "metric": metric.params(),
        "nested_cv_score": score.mean,
        "nested_cv_se": score.se,
        "trivial_baseline": trivial.mean,
        "nested_cv_table": as_report(nested, choice),
        "weights_per_fold": {str(k): {m: float(x) for m, x in zip(names, blends[(weighting, rule)].weights)} for k, blends in per_fold.items()},
        "member_calibrations": {m: {"temperature": c.temperature, "alpha": c.alpha} for m, c in zip(names, final_blend.calibrations)},
        "member_oof_fingerprints": {n: oof_fingerprint(oofs[n]) for n in names},
        "single_variant_own_decision": singles,
        "decision": final_blend.decision.to_dict(),
        "test_aggregation": TEST_AGGREGATION,
        "in_sample_score": metric.score(labels, oof_pred),
        "synthetic": synthetic,
    }
    out = write_submission(test_pred, ref.test_ids.astype(str), classes, cfg, name, provenance)

    z = final_blend.mixture(oof_logits)
    prior = class_prior(labels)
    blended = OOF(
        classes=ref.classes, ids=ref.ids, fold=ref.fold, logits=z,
        test_ids=ref.test_ids, test_logits=np.stack([final_blend.mixture([m.test_logits[k] for m in members]) for k in range(ref.n_folds)]),
        train_prior=prior,
    )
    oof_path = cfg.paths.oof / f"blend_{name}.npz"
    save_oof(oof_path, blended, {"blend": name, **{k: v for k, v in provenance.items() if k != "nested_cv_table"}})
    final_blend.decision.with_(fitted_on=oof_fingerprint(blended)).save(cfg.paths.oof / f"blend_{name}.decision.json")
    write_study(storage, f"blend/{name}", _trials(per_fold, nested, choice, trivial, final_blend, provenance["in_sample_score"]),
                study_summary(choice, trivial, blend=name, variants=names))

    trivial_pred = trivial_prediction(labels, task)
    probs_before = np.exp(final_blend.decision.with_(temperature=1.0).log_probs(z))
    probs_after = np.exp(final_blend.decision.log_probs(z))
    pictures = [
        confusion_png(labels, oof_pred, classes, cfg.paths.submissions / f"{name}_confusion.png",
                      title=f"{name}: OOF confusion, {choice.chosen} (row-normalized)"),
        per_class_png(metric.per_class(labels, oof_pred), metric.per_class(labels, trivial_pred), classes,
                      cfg.paths.submissions / f"{name}_per_class.png",
                      title=f"{name}: OOF score per class, {choice.chosen} (refit on all folds) vs trivial baseline"),
        reliability_png(probs_before, probs_after, labels, task, cfg.paths.submissions / f"{name}_reliability.png",
                        title=f"{name}: OOF reliability of the mixture before / after temperature {final_blend.decision.temperature:.2f}"),
    ]
    for p in (out, out.with_suffix(".json"), oof_path, *pictures):
        console.print(f"wrote {p}", soft_wrap=True, highlight=False)
    console.print(f"Optuna study 'blend/{name}' in {cfg.calibrate.storage} (`kit dashboard`)", soft_wrap=True, highlight=False)
    return out


def _pair_rank(key: str, weightings: list[str], rules: list[str]) -> tuple[int, int]:
    """Simplicity of a (weighting, rule) pair: the sum of their ranks, then the simpler weighting."""
    weighting, rule = key.split(" + ")
    return weightings.index(weighting) + rules.index(rule), weightings.index(weighting)


def _own_decisions(cfg: CompetitionConfig, names: list[str], oofs: dict[str, OOF]) -> dict[str, dict | None]:
    """Each variant's own nested-CV score from `kit calibrate`, when its report was made on this very OOF."""
    out: dict[str, dict | None] = {}
    for n in names:
        report = read_meta(cfg.paths.oof / f"{n}.calibration.json")
        fresh = report is not None and report.get("fitted_on") == oof_fingerprint(oofs[n])
        out[n] = {"variant": n, "rule": report.get("chosen"), "nested_cv": float(report["chosen_nested_cv"])} if fresh else None
    return out


def _print_table(console, name, metric_text, n_folds, nested, choice, simplicity, trivial, singles) -> None:
    table = Table(title=f"blend '{name}': {metric_text}, nested CV over {n_folds} folds (members' calibration, weights and rule fitted on the other folds)")
    for column in ("weighting + rule (simplest first)", "nested CV ± SE", "Δ to best ± SE"):
        table.add_column(column, justify="left" if column.startswith("weighting") else "right")
    table.add_row("trivial baseline", f"{trivial.mean:+.4f} ± {trivial.se:.4f}", "", style="dim")
    for key in simplicity:
        s = nested[key]
        mark = "[bold green]" if key == choice.chosen else ""
        delta = "best" if key == choice.best else f"{choice.delta[key]:+.4f} ± {choice.delta_se[key]:.4f}"
        table.add_row(f"{mark}{key}", f"{mark}{s.mean:+.4f} ± {s.se:.4f}", f"{mark}{delta}")
    for n, own in singles.items():
        text = "— (no `kit calibrate` report for this OOF)" if own is None else f"{own['nested_cv']:+.4f} ({own['rule']})"
        table.add_row(f"[dim]{n} alone, its own decision (kit calibrate)", f"[dim]{text}", "")
    console.print(table)


def _trials(per_fold, nested, choice, trivial, final_blend: Blend, in_sample: float) -> list:
    """One trial per weighting × rule (and the trivial baseline): nested-CV mean, per-fold held-out scores as
    intermediate values, each fold's weights and fitted T and α (the members' and the rule's) as attributes."""
    from optuna.distributions import CategoricalDistribution

    folds = list(per_fold)
    pairs = [key.split(" + ") for key in nested]
    dists = {"weighting": CategoricalDistribution(sorted({w for w, _ in pairs} | {"none"})),
             "rule": CategoricalDistribution(sorted({r for _, r in pairs} | {"trivial"}))}
    trials = [score_trial({"weighting": "none", "rule": "trivial"}, dists, trivial, folds, choice, "trivial", candidate="trivial baseline")]
    for w, r in pairs:
        key = pair_key(w, r)
        attrs: dict[str, Any] = {"candidate": key}
        for k, blends in per_fold.items():
            b = blends[(w, r)]
            attrs[f"fold{k}.weights"] = dict(zip(b.members, (round(float(x), 6) for x in b.weights)))
            attrs[f"fold{k}.members"] = {m: {"temperature": round(float(c.temperature), 6), "alpha": round(float(c.alpha), 6)}
                                         for m, c in zip(b.members, b.calibrations)}
            attrs.update(fitted_attrs(b.decision, prefix=f"fold{k}."))
        if key == choice.chosen:
            attrs.update(in_sample=in_sample, **fitted_attrs(final_blend.decision, prefix="refit."),
                         **{"refit.weights": dict(zip(final_blend.members, (round(float(x), 6) for x in final_blend.weights)))})
        trials.append(score_trial({"weighting": w, "rule": r}, dists, nested[key], folds, choice, key, **attrs))
    return trials
