"""Stage `kit blend`: ensemble the variants' OOF logits, decide, write the submission.

Inside each outer fold the whole pipeline is fitted on the other folds (kit.ensemble.pipeline): every
member's temperature and prior-correction strength α by NLL, the weights (best single member, equal,
or greedy selection), and a decision candidate on the mixture; the held-out fold scores it. So the
blend's nested score has no leak, and no decision file of `kit calibrate` is read. The simplest
(weighting, rule) pair within one paired SE of the best is refitted on all folds; the test set gets
the K fold models' logits aggregated as kit.ensemble.aggregate.TEST_AGGREGATION says.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from kit.artifacts import (
    OOF,
    TEST_IMAGES_KEY,
    check_against_folds,
    check_for_competition,
    check_oof_meta,
    check_same_classes,
    load_oof,
    oof_fingerprint,
    require_same_test_images,
    save_oof,
    test_images_fingerprint,
)
from kit.config import CompetitionConfig, check_name, resolve_variants
from kit.decision.calibration import class_prior
from kit.decision.candidates import FitContext, candidates_for
from kit.decision.metrics import Metric, build_metric, trivial_prediction
from kit.decision.names import MEMBERS_CALIBRATED, degenerate_notes, display_name
from kit.decision.nested import as_report
from kit.decision.record import study_summary, write_study
from kit.decision.select import check_nested_inputs
from kit.ensemble.aggregate import TEST_AGGREGATION, aggregate_predict
from kit.ensemble.pipeline import Blend, Member
from kit.ensemble.record import blend_record
from kit.ensemble.select import BlendSelection, blend_rules, blend_trials, blend_weightings, pair_label, select_blend
from kit.errors import KitError
from kit.paths import BLEND_OOF_PREFIX, blend_decision_json, blend_oof_npz, calibration_json, oof_npz, provenance_json, submission_picture
from kit.records import CalibrationReport
from kit.studies import exclusive_studies, open_storage


def blend(cfg: CompetitionConfig, variants: list[str] | None, name: str = "blend", console: Console | None = None,
          oof: list[Path] | None = None) -> Path:
    """Nested-CV table of every (weighting, rule), the chosen blend refitted on all folds, the submission,
    the blended OOF, its decision, an Optuna study and three PNGs. Members: `oof` files, else `variants`."""
    from kit.data.sources import open_source

    console = console or Console()
    check_name(name, "--name")  # before anything is read or written: no path, no reserved name (ledger), not too long
    paths = _member_paths(cfg, variants, oof)
    names = list(paths)
    metric = build_metric(cfg.metric)
    oofs = {n: load_oof(p) for n, p in paths.items()}
    check_same_classes(oofs)
    source = open_source(cfg)
    for n, oof in oofs.items():
        check_against_folds(oof, cfg.folds.path, paths[n])
        check_for_competition(oof, list(source.classes), cfg.task, paths[n], f"the data source {cfg.data.dir}")
        meta = check_oof_meta(paths[n], metric.params(), source.train.fingerprint, cfg.calibrate.accept_stale_oof, cfg.source_file)
        require_same_test_images(meta, source, paths[n], _fresh_test_logits_fix(n, paths[n], cfg))
    ref = oofs[names[0]]
    classes = ref.classes.astype(str).tolist()
    fold = ref.fold.astype(np.int64)
    labels = source.train_labels_for(ref.ids, cfg.data.dir)
    for n in names:
        check_nested_inputs(oofs[n].logits, labels, fold, classes, cfg.task, str(paths[n]))
    with exclusive_studies(cfg.calibrate.storage, [f"blend/{name}"]):
        storage = open_storage(cfg.calibrate.storage)  # checked before the long computation
        return _fit_and_write(cfg, name, paths, oofs, labels, bool(source.synthetic), metric=metric, storage=storage, console=console,
                              test_images=test_images_fingerprint(source))


def _fresh_test_logits_fix(member: str, path: Path, cfg: CompetitionConfig) -> str:
    """How to get test logits of the current test images for a member."""
    if member.startswith(BLEND_OOF_PREFIX):
        return f"retrain its members with `kit train`, then `kit blend --name {member.removeprefix(BLEND_OOF_PREFIX)}` again"
    if path.parent.resolve() == cfg.paths.oof.resolve():
        return f"retrain it with `kit train --variant {member}` (without --resume), then run `kit blend` again"
    return "predict the current test images with your model and write the file again (with the current test_ids)"


def _member_paths(cfg: CompetitionConfig, variants: list[str] | None, oof: list[Path] | None) -> dict[str, Path]:
    """Member name (the file's stem) -> OOF file: the --oof files as given, else the variants' files in paths.oof."""
    if oof and variants:
        raise KitError("kit blend: give the members by --oof files or by --variants, not both")
    if oof:
        paths = {Path(p).stem: Path(p) for p in oof}
        if len(paths) != len(oof):
            raise KitError(f"--oof lists two files with one name ({[str(p) for p in oof]}); members are named by their file name, give each once")
        return paths
    names = resolve_variants(variants, cfg)
    if len(set(names)) != len(names):
        raise KitError(f"--variants lists a variant twice ({names}); list each once")
    return {n: oof_npz(cfg, n) for n in names}


def _fit_and_write(cfg: CompetitionConfig, name: str, paths: dict[str, Path], oofs: dict[str, OOF], labels: np.ndarray, synthetic: bool,
                   *,
                   metric: Metric, storage, console: Console, test_images: str) -> Path:
    """The blend's selection (kit.ensemble.select), then every file the stage writes."""
    names = list(paths)
    ref = oofs[names[0]]
    members = [Member(n, oofs[n].logits, oofs[n].test_logits, oofs[n].train_prior) for n in names]
    selection = _select(cfg, name, members, labels, ref, metric, console=console)
    singles = _own_decisions(paths, oofs)
    _print_table(console, name, metric.describe(), ref.n_folds, selection, singles, sign=metric.sign)
    out, provenance = _write_submission(cfg, name, names, oofs, members, labels, selection=selection, singles=singles, synthetic=synthetic, metric=metric,
                                        test_images=test_images)
    for note in provenance["notes"]:
        console.print(f"[bold yellow]submission {out.name}: {note}", soft_wrap=True, highlight=False)
    blended, oof_path = _write_blended_oof(cfg, name, members, labels, ref, selection, provenance=provenance)
    write_study(storage, f"blend/{name}", blend_trials(selection, provenance["in_sample_score"]),
                study_summary(selection.choice, selection.trivial, blend=name, chosen=pair_label(selection.chosen), best=pair_label(selection.choice.best),
                              variants=names, metric=metric.name, direction=metric.direction),
                direction=metric.direction)
    pictures = _write_pictures(cfg, name, members, labels, blended, selection, metric=metric)
    for p in (out, provenance_json(out), oof_path, *pictures):
        console.print(f"wrote {p}", soft_wrap=True, highlight=False)
    console.print(f"Optuna study 'blend/{name}' in {cfg.calibrate.storage} (`kit dashboard`)", soft_wrap=True, highlight=False)
    return out


def _select(cfg: CompetitionConfig, name: str, members: list[Member], labels: np.ndarray, ref: OOF, metric: Metric,
            *,
            console: Console) -> BlendSelection:
    """select_blend over every weighting and the task's blend rules, with a progress bar."""
    from kit.progress import make_progress

    classes = tuple(ref.classes.astype(str).tolist())
    context = FitContext(cfg.task, classes, metric, np.ones(len(classes)) / len(classes), cfg.calibrate)
    rules = [c for c in candidates_for(cfg.task, metric) if c.name in blend_rules(cfg.task, metric.kind)]  # those this metric supports
    weightings = blend_weightings(metric.kind)
    n_folds = len(np.unique(ref.fold))
    with make_progress(console) as progress:
        bar = progress.add_task(f"blend {name}: {len(members)} members, {len(weightings)} weightings × {len(rules)} rules × {n_folds} folds",
                                total=n_folds + 1)
        return select_blend(members, labels, ref.fold.astype(np.int64), context, weightings, rules, on_fit=lambda: progress.advance(bar),
                            blend_settings=cfg.blend)


def _write_submission(cfg: CompetitionConfig, name: str, names: list[str], oofs: dict[str, OOF], members: list[Member], labels: np.ndarray,
                      *,
                      selection: BlendSelection, singles: dict, synthetic: bool, metric: Metric, test_images: str) -> tuple[Path, dict[str, Any]]:
    """The submission CSV and its provenance JSON (what was chosen, how, and how it scored in nested CV)."""
    from kit.submission import write_submission

    final, (weighting, rule) = selection.final, selection.chosen
    score, trivial = selection.scores[selection.chosen], selection.trivial
    test_pred = aggregate_predict(final, [m.test_logits for m in members])
    trivial_class = None
    if _worse_than_trivial_everywhere(selection, metric):  # no pair has any skill: submit the no-skill prediction, and say so
        trivial_class = int(labels.sum(axis=0).argmax())
        test_pred = trivial_prediction(np.zeros((len(test_pred), labels.shape[1]), dtype=np.uint8), cfg.task, trivial_class,
                                       metric=metric, prior=class_prior(labels))
        rule, score = "trivial", trivial
        print_line = f"every weighting × rule of blend '{name}' scores below the trivial baseline in every fold: " \
                     f"{name}.csv holds the trivial prediction (majority class everywhere; multi-label: all negative); retrain the members"
        Console(stderr=True).print(f"warning: {print_line}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    provenance: dict[str, Any] = {
        "variants": names,
        "weights": _weights(names, final),
        "weighting": weighting,
        "decision_rule": rule,
        "selection": selection.choice.rule,
        "metric": metric.params(),
        "direction": metric.direction,  # "minimize" for log-loss: a lower score is better
        "nested_cv_score": score.mean,
        "nested_cv_se": score.se,
        "trivial_baseline": trivial.mean,
        "nested_cv_table": as_report(selection.scores, selection.choice, {p: display_name(p) for p in selection.scores}, name=pair_label),
        "weights_per_fold": {str(k): _weights(names, blends[selection.chosen]) for k, blends in selection.per_fold.items()},
        "stacker": final.stacker.describe() if final.stacker is not None else None,
        "member_calibrations": {m: {"temperature": c.temperature, "alpha": c.alpha} for m, c in zip(names, final.calibrations)},
        "member_oof_fingerprints": {n: oof_fingerprint(oofs[n]) for n in names},
        "single_variant_own_decision": singles,
        "decision": final.decision.to_dict(),
        "test_aggregation": TEST_AGGREGATION,
        "in_sample_score": metric.score(labels, final.predict([m.logits for m in members])),
        "synthetic": synthetic,
        TEST_IMAGES_KEY: test_images,  # the test images the members' test logits saw: `kit submit` checks it
        "notes": degenerate_notes(None, test_pred, cfg.task, oofs[names[0]].classes.astype(str).tolist()),  # single class, no positive
        "fitted_blend": blend_record(final, classes=oofs[names[0]].classes.astype(str).tolist(), aggregation=TEST_AGGREGATION,
                                     trivial_class=trivial_class),  # what `kit predict` applies to new test logits
    }
    ref = oofs[names[0]]
    return write_submission(test_pred, ref.test_ids.astype(str), ref.classes.astype(str).tolist(), cfg, name, provenance), provenance


def _worse_than_trivial_everywhere(selection: BlendSelection, metric: Metric) -> bool:
    """Whether every (weighting, rule) pair scores worse than the trivial baseline in every outer fold (the metric's direction)."""
    return all(metric.better(t, s) for pair in selection.pairs for s, t in zip(selection.scores[pair].per_fold, selection.trivial.per_fold))


def _weights(names: list[str], b: Blend) -> dict[str, float] | None:
    """Member -> weight; None for the stacker (its weights are per class: see "stacker")."""
    return None if b.weights is None else {m: float(w) for m, w in zip(names, b.weights)}


def _write_blended_oof(cfg: CompetitionConfig, name: str, members: list[Member], labels: np.ndarray, ref: OOF, selection: BlendSelection,
                       *,
                       provenance: dict[str, Any]) -> tuple[OOF, Path]:
    """The chosen blend as one OOF (its mixture, to be blended again) and its decision tied to it."""
    final = selection.final
    blended = OOF(
        classes=ref.classes, ids=ref.ids, fold=ref.fold, logits=final.mixture([m.logits for m in members]),
        test_ids=ref.test_ids, test_logits=np.stack([final.mixture([m.test_logits[k] for m in members]) for k in range(ref.n_folds)]),
        train_prior=class_prior(labels),
    )
    oof_path = blend_oof_npz(cfg, name)
    save_oof(oof_path, blended, {"blend": name, **{k: v for k, v in provenance.items() if k != "nested_cv_table"}})
    final.decision.with_(fitted_on=oof_fingerprint(blended)).save(blend_decision_json(cfg, name))
    return blended, oof_path


def _write_pictures(cfg: CompetitionConfig, name: str, members: list[Member], labels: np.ndarray, blended: OOF, selection: BlendSelection,
                    *,
                    metric: Metric) -> list[Path]:
    """Confusion, per-class score against the trivial baseline, and the mixture's reliability before / after T."""
    from kit.plots import confusion_png, per_class_png, reliability_png

    classes, chosen, decision = blended.classes.astype(str).tolist(), pair_label(selection.chosen), selection.final.decision
    oof_pred = selection.final.predict([m.logits for m in members])
    trivial_pred = trivial_prediction(labels, cfg.task, metric=metric)
    uncalibrated = decision.with_(calibrator=replace(decision.calibrator, temperature=1.0))
    confusion = ([confusion_png(labels, oof_pred, classes, submission_picture(cfg, name, "confusion"),
                                title=f"{name}: OOF confusion, {chosen} (row-normalized)")]
                 if metric.kind == "label" else [])  # probabilities have no confusion matrix
    return [
        *confusion,
        per_class_png(metric.per_class(labels, oof_pred), metric.per_class(labels, trivial_pred), classes, submission_picture(cfg, name, "per_class"),
                      title=f"{name}: OOF score per class, {chosen} (refit on all folds) vs trivial baseline"),
        reliability_png(np.exp(uncalibrated.log_probs(blended.logits)), np.exp(decision.log_probs(blended.logits)), labels, cfg.task,
                        submission_picture(cfg, name, "reliability"),
                        title=f"{name}: OOF reliability of the mixture before / after temperature {decision.temperature:.2f}"),
    ]


def _own_decisions(paths: dict[str, Path], oofs: dict[str, OOF]) -> dict[str, dict | None]:
    """Each variant's own nested-CV score from `kit calibrate` (the report beside its OOF), when made on this very OOF."""
    out: dict[str, dict | None] = {}
    for n, path in paths.items():
        report = CalibrationReport.read_if_exists(calibration_json(path))
        fresh = report is not None and report.fitted_on == oof_fingerprint(oofs[n])
        out[n] = {"variant": n, "rule": report.chosen, "nested_cv": float(report.chosen_nested_cv)} if fresh else None
    return out


def _print_table(console: Console, name: str, metric_text: str, n_folds: int, selection: BlendSelection, singles: dict, *,
                 sign: float = 1.0) -> None:
    """Every pair's nested score beside the trivial baseline and each member's own `kit calibrate` score, then the summary line
    (`sign`: -1 when the metric is lower-is-better)."""
    choice, trivial = selection.choice, selection.trivial
    table = Table(title=f"blend '{name}': {metric_text}, nested CV over {n_folds} folds (members' calibration, weights and rule fitted on the other folds)")
    for column in ("weighting + rule (simplest first)", "nested CV ± SE", "Δ to best ± SE"):
        table.add_column(column, justify="left" if column.startswith("weighting") else "right")
    table.add_row("trivial baseline", f"{trivial.mean:+.4f} ± {trivial.se:.4f}", "", style="dim")
    for pair in selection.pairs:
        s = selection.scores[pair]
        mark = "[bold green]" if pair == choice.chosen else ""
        delta = "best" if pair == choice.best else f"{choice.delta[pair]:+.4f} ± {choice.delta_se[pair]:.4f}"
        note = f" [dim]({MEMBERS_CALIBRATED})" if pair[0] == "single_best" else ""
        table.add_row(f"{mark}{display_name(pair)}{note}", f"{mark}{s.mean:+.4f} ± {s.se:.4f}", f"{mark}{delta}")
    for n, own in singles.items():
        text = "— (no `kit calibrate` report for this OOF)" if own is None else f"{own['nested_cv']:+.4f} ({display_name(own['rule'])})"
        table.add_row(f"[dim]{n} alone, its own decision (kit calibrate)", f"[dim]{text}", "")
    console.print(table)
    score = selection.scores[choice.chosen]
    best_single = max((s for s in singles.values() if s is not None), key=lambda s: sign * s["nested_cv"], default=None)
    console.print(
        f"blend {score.mean:+.4f} ± {score.se:.4f} ({display_name(selection.chosen)}, {MEMBERS_CALIBRATED}; {choice.rule})"
        + (f" vs best single variant {best_single['variant']} {best_single['nested_cv']:+.4f}" if best_single else "")
        + f" vs trivial baseline {trivial.mean:+.4f} (nested CV)",
        soft_wrap=True, highlight=False,
    )
