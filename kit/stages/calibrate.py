"""Stage `kit calibrate`: for each variant's OOF, choose its decision rule by nested cross-validation.

Every candidate of kit.decision.candidates (trivial, argmax, prior-corrected argmax, the metric's Bayes
rule with T, with T and α, per-class offsets; multi-label: thresholds) is fitted on K−1 folds and scored
on the held-out fold. The simplest candidate within one paired standard error of the best is kept,
refitted on all folds and saved as `oof/<variant>.decision.json`, tied to the OOF it was fitted on;
the table and `oof/<variant>.calibration.json` show every candidate's nested score ± SE beside the
trivial baseline; the fits go to one Optuna study per variant (`kit dashboard`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kit.artifacts import OOF, check_against_folds, check_for_competition, check_oof_meta, load_oof, oof_fingerprint
from kit.config import CompetitionConfig, resolve_variants
from kit.decision.candidates import Candidate, FitContext, candidates_for
from kit.decision.metrics import Metric, build_metric
from kit.decision.names import degenerate_notes, display_name
from kit.decision.nested import as_report
from kit.decision.record import search_studies, selection_trials, study_summary, write_search_studies, write_study
from kit.decision.rules import Decision
from kit.decision.select import Selection, check_nested_inputs, select_decision
from kit.errors import KitError
from kit.paths import calibration_json, calibration_per_class_png, decision_json, oof_npz
from kit.plots import per_class_png
from kit.progress import make_progress
from kit.records import CalibrationReport
from kit.studies import exclusive_studies, open_storage


def find_oof_paths(cfg: CompetitionConfig, oof: list[Path] | None = None, variants: list[str] | None = None) -> list[Path]:
    """--oof files as given; else --variant names (or all of cfg.variants) that have an OOF file."""
    if oof:
        return [Path(p) for p in oof]
    if variants and variants != ["all"]:
        return [oof_npz(cfg, v) for v in resolve_variants(variants, cfg)]  # names checked before any path is made
    found = [oof_npz(cfg, v) for v in cfg.variants if oof_npz(cfg, v).is_file()]
    if not found:
        raise KitError(f"{cfg.paths.oof}: no OOF file for the variants {cfg.variants} of {cfg.source_file}; run `kit train` first")
    return found


def calibrate(cfg: CompetitionConfig, oof_paths: list[Path], console: Console | None = None) -> dict[str, Decision]:
    """For each OOF file: the candidates' nested-CV table, the chosen decision saved beside the OOF, a
    report JSON, a per-class PNG and an Optuna study. Every input is checked before anything is written,
    and the studies are held for the whole run (a second run on the same storage is refused)."""
    from kit.data.sources import open_source

    console = console or Console()
    metric = build_metric(cfg.metric)
    source = open_source(cfg)
    if source.task != cfg.task:
        raise KitError(f"{cfg.source_file}: task is '{cfg.task}' but the data source is '{source.task}'")
    try:
        candidates = candidates_for(cfg.task, metric, cfg.calibrate.candidates)
    except ValueError as exc:
        raise KitError(f"{cfg.source_file}: key 'calibrate.candidates': {exc}") from None
    targets = []
    for path in map(Path, oof_paths):
        oof = load_oof(path)
        check_against_folds(oof, cfg.folds.path, path)
        check_for_competition(oof, list(source.classes), cfg.task, path, f"the data source {cfg.data.dir}")
        check_oof_meta(path, metric.params(), source.train.fingerprint, cfg.calibrate.accept_stale_oof, cfg.source_file)
        classes = oof.classes.astype(str).tolist()
        labels = source.train_labels_for(oof.ids, path)
        check_nested_inputs(oof.logits, labels, oof.fold, classes, cfg.task, str(path))
        targets.append((path, oof, labels, classes))
    with exclusive_studies(cfg.calibrate.storage, [f"calibrate/{path.stem}" for path, *_ in targets]):
        storage = open_storage(cfg.calibrate.storage)  # checked before the long computation
        return {
            path.stem: _calibrate_target(cfg, metric, candidates, storage, path, oof, labels=labels, classes=classes, console=console)
            for path, oof, labels, classes in targets
        }


def _calibrate_target(cfg: CompetitionConfig, metric: Metric, candidates: list[Candidate], storage, path: Path, oof: OOF, *, labels: np.ndarray,
                      classes: list[str], console: Console) -> Decision:
    """One variant: the nested-CV selection, then its decision, report, study and picture."""
    name = path.stem
    context = FitContext(cfg.task, tuple(classes), metric, oof.train_prior, cfg.calibrate)
    n_folds = len(np.unique(oof.fold))
    with make_progress(console) as progress:
        bar = progress.add_task(f"calibrate {name}: {len(candidates)} candidates × {n_folds} folds + refit", total=n_folds + 1)
        selection = select_decision(oof.logits, labels, oof.fold, context, candidates, on_fit=partial(progress.advance, bar))
    decision = selection.decision.with_(fitted_on=oof_fingerprint(oof))
    trivial = selection.scores["trivial"]
    report = CalibrationReport(
        target=name, task=cfg.task, metric=metric.params(), direction=metric.direction, n_folds=n_folds, fitted_on=decision.fitted_on,
        selection=selection.choice.rule, rows=as_report(selection.scores, selection.choice, {c.name: display_name(c.name) for c in candidates}),
        in_sample=selection.in_sample, nested_cv={k: s.mean for k, s in selection.scores.items()},
        trivial_baseline={"nested_cv": trivial.mean, "se": trivial.se},
        chosen=selection.choice.chosen, chosen_nested_cv=selection.scores[selection.choice.chosen].mean,
        best=selection.choice.best, temperature=decision.temperature, alpha=decision.alpha,
        fitted_per_fold={str(k): {c: _fitted(d) for c, d in fitted.items()} for k, fitted in selection.per_fold.items()},
        storage=cfg.calibrate.storage, study=f"calibrate/{name}",
    )
    print_selection(console, f"{name}: competition metric {metric.describe()} by decision rule", selection, n_folds)
    for note in degenerate_notes(selection.choice.chosen, decision.predict(oof.logits), cfg.task, classes):
        console.print(f"[bold yellow]{name}: {note} (OOF, refit on all folds)", soft_wrap=True, highlight=False)
    out, report_path = decision_json(path), calibration_json(path)
    decision.save(out)
    report.write(report_path)
    write_study(storage, f"calibrate/{name}", selection_trials(selection, {c.name: display_name(c.name) for c in candidates}),
                study_summary(selection.choice, trivial, target=name, metric=metric.name, direction=metric.direction),
                direction=metric.direction)
    searches = write_search_studies(storage, f"calibrate/{name}", search_studies(selection))
    png = per_class_png(
        metric.per_class(labels, decision.predict(oof.logits)),
        metric.per_class(labels, selection.final["trivial"].predict(oof.logits)),
        classes, calibration_per_class_png(path),
        title=f"{name}: OOF score per class, rule '{selection.choice.chosen}' (refit on all folds) vs trivial baseline",
    )
    console.print(f"wrote {out}, {report_path} and {png}", soft_wrap=True, highlight=False)
    also = f" and {len(searches)} studies of its offsets searches ('calibrate/{name}/offsets/…')" if searches else ""
    console.print(f"Optuna study 'calibrate/{name}'{also} in {cfg.calibrate.storage} (`kit dashboard`)", soft_wrap=True, highlight=False)
    return decision


def print_selection(console: Console, title: str, selection: Selection, n_folds: int) -> None:
    """The candidates' table: nested mean ± SE, difference to the best ± paired SE, in-sample, the choice."""
    table = Table(title=f"{title} (nested CV over {n_folds} folds)")
    for column in ("candidate (simplest first)", "nested CV ± SE", "Δ to best ± SE", "in-sample"):
        table.add_column(column, justify="left" if column.startswith("candidate") else "right")
    choice = selection.choice
    for c in selection.candidates:
        s = selection.scores[c.name]
        mark = "[bold green]" if c.name == choice.chosen else ("[dim]" if c.name == "trivial" else "")
        delta = "best" if c.name == choice.best else f"{choice.delta[c.name]:+.4f} ± {choice.delta_se[c.name]:.4f}"
        label = escape(display_name(c.name))
        table.add_row(f"{mark}{label}", f"{mark}{s.mean:+.4f} ± {s.se:.4f}", f"{mark}{delta}", f"{mark}{selection.in_sample[c.name]:+.4f}")
    console.print(table)
    chosen = selection.scores[choice.chosen]
    console.print(
        f"chosen: [bold]{escape(display_name(choice.chosen))}[/] ({choice.chosen}) — {choice.rule} — nested CV {chosen.mean:+.4f} vs trivial baseline "
        f"{selection.scores['trivial'].mean:+.4f}; temperature {selection.decision.temperature:.3f}, α {selection.decision.alpha:.3f}",
        soft_wrap=True, highlight=False,
    )


def _fitted(decision) -> dict:
    d = decision.to_dict()
    return {k: d[k] for k in ("temperature", "alpha", "offsets", "thresholds", "cuts", "bias") if k in d}

