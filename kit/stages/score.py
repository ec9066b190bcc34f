"""Stage `kit score`: score a submission file against a solution CSV, beside the trivial baseline.

The submission is held to the rules `kit submit` applies: a file with two or no positives in a
multi-class row, values other than 0/1 (for a probability or ranking metric: values outside [0, 1], or
multi-class rows not summing to 1) or ids that differ from the solution's is not scored; a file
`kit submit` would refuse only for its form (row order, format unlike the sample's) is scored with
one warning line. The solution gets the same row checks. Class names come from the data source,
or, when the config's data directory does not exist, from the solution's header, so a solution
file alone is enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from kit.config import CompetitionConfig
from kit.decision.metrics import signed
from kit.decision.names import degenerate_notes, display_name
from kit.errors import KitError
from kit.submission import check_one_label_per_row, check_submission_file, read_csv_str, submission_format, to_indicator, to_values


@dataclass(frozen=True)
class _Scored:
    """A submission's rows aligned to the solution's, as indicator matrices over `classes`."""

    solution_name: str
    classes: list[str]
    train_labels: np.ndarray | None  # for the majority-class baseline; None without the data directory
    sol_ids: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray


def score_file(
    submission_csv: str | Path,
    solution_csv: str | Path | None,
    cfg: CompetitionConfig,
    compare_argmax: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Score a submission against a solution CSV (None: the source's own test labels); print it beside
    the trivial baseline and per class.

    With `compare_argmax`, also score the argmax of each variant's mean test logits (oof/<variant>.npz),
    so that the decision layer's gain over the published way of deciding is visible.
    """
    from kit.decision.metrics import build_metric, trivial_prediction

    console = console or Console()
    metric = build_metric(cfg.metric)
    submission_name = str(submission_csv)
    rows = _read_and_align(submission_csv, solution_csv, cfg, console, metric.kind)
    y_true, y_pred = rows.y_true, rows.y_pred
    majority = None if rows.train_labels is None else int(np.argmax(rows.train_labels.sum(axis=0)))
    train_prior = None if rows.train_labels is None else rows.train_labels.mean(axis=0)
    baseline_pred = trivial_prediction(y_true, cfg.task, majority, metric=metric, prior=train_prior)
    baseline = metric.score(y_true, baseline_pred)
    score = metric.score(y_true, y_pred)
    per_class = metric.per_class(y_true, y_pred)
    result: dict[str, Any] = {
        "submission": submission_name,
        "solution": rows.solution_name,
        "score": float(score),
        "trivial_baseline": float(baseline),
        "per_class": {c: (None if np.isnan(s) else float(s)) for c, s in zip(rows.classes, per_class)},
        "n": int(len(y_true)),
        "metric": metric.params(),
        "direction": metric.direction,
    }
    base_per_class = metric.per_class(y_true, baseline_pred) if cfg.task == "multi-class" or metric.kind != "label" else None
    _print_per_class(console, submission_name, rows, per_class, base_per_class)
    if compare_argmax:
        result["argmax"] = argmax_scores(cfg, rows.classes, rows.sol_ids, y_true, blend_members(Path(submission_csv)))
        if result["argmax"]:
            best = max(result["argmax"], key=lambda v: metric.sign * result["argmax"][v])
            result["best_argmax"] = {"variant": best, "score": result["argmax"][best]}
    _print_summary(console, cfg, result, has_train_labels=rows.train_labels is not None, kind=metric.kind)
    # kit.decision.names: one line each, not only a cell (labels only: probabilities name no single class)
    result["notes"] = degenerate_notes(None, y_pred, cfg.task, rows.classes) if metric.kind == "label" else []
    for note in result["notes"]:
        console.print(f"[bold yellow]{Path(submission_name).name}: {note}", soft_wrap=True, highlight=False)
    return result


def _read_and_align(submission_csv: str | Path, solution_csv: str | Path | None, cfg: CompetitionConfig,
                    console: Console, kind: str = "label") -> _Scored:
    """Read both files, hold each to the row checks, and put the submission's rows in the solution's order
    (for a probability or ranking metric, the submission's probabilities in any of its formats)."""
    id_col = cfg.data.id_column
    submission_name = str(submission_csv)
    submission_frame = read_csv_str(submission_csv, "pass a submission CSV written by `kit blend`")
    if solution_csv is None:
        solution_frame, solution_name = default_solution(cfg)
    else:
        solution_frame, solution_name = read_csv_str(solution_csv, "check --solution"), str(solution_csv)
    if solution_frame.empty:
        raise KitError(f"{solution_name}: has a header but no rows; a solution needs one row per test id")
    classes, train_labels = classes_and_train_labels(cfg, solution_frame, submission_frame, solution_name, kind)

    sol_ids, y_true = solution_indicator(solution_frame, classes, id_col, solution_name)
    check_one_label_per_row(sol_ids, y_true, cfg.task, solution_name)
    _check_unique(sol_ids, solution_name)
    if kind == "label":
        sub_ids, y_sub = to_indicator(submission_frame, classes, id_col, submission_name)
        check_one_label_per_row(sub_ids, y_sub, cfg.task, submission_name)
    else:
        sub_ids, y_sub = to_values(submission_frame, classes, id_col, submission_name, cfg.task)
    _check_unique(sub_ids, submission_name)
    y_pred = align_rows(sub_ids, y_sub, sol_ids, submission_name)
    _warn_unless_submittable(Path(submission_csv), cfg, classes, console)
    return _Scored(solution_name, classes, train_labels, sol_ids, y_true, y_pred)


def _print_per_class(console: Console, submission_name: str, rows: _Scored, per_class: np.ndarray,
                     base_per_class: np.ndarray | None) -> None:
    """Per class: its count in the solution, the submission's score, and (multi-class) the trivial baseline's."""
    table = Table(title=f"{Path(submission_name).name} vs {Path(rows.solution_name).name} ({len(rows.y_true)} rows)")
    table.add_column("class")
    table.add_column("N", justify="right")
    table.add_column("score", justify="right")
    if base_per_class is not None:
        table.add_column("trivial", justify="right")
    for k, c in enumerate(rows.classes):
        row = [c, str(int(rows.y_true[:, k].sum())), signed(per_class[k])]
        if base_per_class is not None:
            row.append(signed(base_per_class[k]))
        table.add_row(*row)
    console.print(table)


def _print_summary(console: Console, cfg: CompetitionConfig, result: dict[str, Any], has_train_labels: bool, kind: str = "label") -> None:
    """The submission's score below the trivial baseline and, when asked, each variant decided by argmax
    (for a probability or ranking metric: by its raw softmax / sigmoid)."""
    multi_class = cfg.task == "multi-class"
    lower = " (lower is better)" if result.get("direction") == "minimize" else ""
    summary = Table(title=f"Leaderboard metric on the solution{lower}")
    summary.add_column("what")
    summary.add_column("score", justify="right")
    if kind != "label":
        trivial_name = ("the training prior in every row" if has_train_labels else "the solution's prior in every row") + (
            ": a constant, AUC 0.5" if kind == "ranking" else "")
    elif not multi_class:
        trivial_name = "all negative"
    elif has_train_labels:
        trivial_name = "majority class of train everywhere"
    else:
        trivial_name = "majority class of the solution everywhere: no training labels without the data directory"
    summary.add_row(f"trivial baseline ({trivial_name})", signed(result["trivial_baseline"]))
    if "argmax" in result:
        plain = display_name("raw") if kind != "label" else display_name("argmax") if multi_class else display_name("threshold_0.5")
        for variant, s in result["argmax"].items():
            summary.add_row(f"{variant} by {plain} (mean test logits)", signed(s))
        if "best_argmax" in result:
            best = result["best_argmax"]
            summary.add_row(f"[bold]best single variant by {plain} ({best['variant']})", f"[bold]{signed(best['score'])}")
        else:
            summary.add_row(f"no oof/<variant>.npz for the variants {cfg.variants}", "—")
    summary.add_row(f"[bold]{Path(result['submission']).name}", f"[bold]{signed(result['score'])}")
    console.print(summary)


def blend_members(submission_csv: Path) -> list[str] | None:
    """The variants `kit blend` recorded in the submission's provenance JSON (None without one, or an unreadable one)."""
    from kit.paths import provenance_json
    from kit.records import SubmissionMeta

    try:
        meta = SubmissionMeta.read_if_exists(provenance_json(submission_csv))
    except KitError:
        return None
    members = None if meta is None else meta.variants
    return [str(m) for m in members] if isinstance(members, list) and members else None


def argmax_scores(
    cfg: CompetitionConfig, classes: list[str], sol_ids: np.ndarray, y_true: np.ndarray, variants: list[str] | None = None
) -> dict[str, float]:
    """Score of argmax over the mean test logits for each variant (the blend's members, else the config's)
    that has an OOF file."""
    from kit.artifacts import load_oof
    from kit.decision.metrics import build_metric
    from kit.paths import oof_npz

    metric = build_metric(cfg.metric)
    plain = argmax_prediction if metric.kind == "label" else raw_probabilities
    out: dict[str, float] = {}
    for variant in variants or cfg.variants:
        path = oof_npz(cfg, variant)
        if not path.is_file():
            continue
        oof = load_oof(path)
        if oof.classes.tolist() != classes:
            raise KitError(f"{path}: classes differ from the data source's; retrain it on this data")
        pred = plain(oof.test_logits.mean(axis=0), cfg.task)
        out[variant] = float(metric.score(y_true, align_rows(oof.test_ids.astype(str), pred, sol_ids, str(path))))
    return out


def argmax_prediction(logits: np.ndarray, task: str) -> np.ndarray:
    """The plain decision published solutions use: argmax (multi-class) or logit > 0 (multi-label)."""
    if task == "multi-label":
        return (logits > 0).astype(np.uint8)
    pred = np.zeros(logits.shape, dtype=np.uint8)
    pred[np.arange(len(logits)), logits.argmax(axis=1)] = 1
    return pred


def raw_probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """The plain probabilities of logits: softmax (multi-class) or sigmoid (multi-label), float64."""
    z = np.asarray(logits, dtype=np.float64)
    if task == "multi-label":
        return 1 / (1 + np.exp(-z))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def solution_indicator(frame: pd.DataFrame, classes: list[str], id_column: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (n, C) uint8) of a solution in any format: one-hot, a label column, or long (`ID_<image>_<class>`, 0/1)."""
    if submission_format(frame, classes, id_column, source) != "long":
        return to_indicator(frame, classes, id_column, source)
    ids, values = to_values(frame, classes, id_column, source, "multi-label")
    if not np.isin(values, (0.0, 1.0)).all():
        raise KitError(f"{source}: a solution's values must be 0 or 1")
    return ids, values.astype(np.uint8)


def default_solution(cfg: CompetitionConfig) -> tuple[pd.DataFrame, str]:
    """The test labels where the source has them: data.solution_csv (Kaggle layout) or the npz's test labels."""
    if cfg.data.source == "medmnist":
        from kit.data.sources import test_labels

        frame = test_labels(cfg)
        if frame is None:
            raise KitError(f"{cfg.data.dir / cfg.data.npz}: has no test_labels; pass --solution CSV")
        frame = frame.astype({c: str for c in frame.columns})
        return frame.rename(columns={"id": cfg.data.id_column}), f"{cfg.data.dir / cfg.data.npz} test labels"
    if not cfg.data.solution_csv:
        raise KitError(f"{cfg.source_file or 'the config'}: data.solution_csv is not set; pass --solution CSV")
    path = cfg.data.dir / cfg.data.solution_csv
    return read_csv_str(path, "pass --solution CSV or set data.solution_csv"), str(path)


def classes_and_train_labels(
    cfg: CompetitionConfig, solution: pd.DataFrame, submission: pd.DataFrame, solution_name: str, kind: str = "label"
) -> tuple[list[str], np.ndarray | None]:
    """Class names and train labels (for the majority-class baseline) from the data source; without the
    data directory, the names come from data.class_columns or the solution's header (no train labels)."""
    if cfg.data.dir.exists():
        from kit.data.sources import open_source

        source = open_source(cfg)
        return list(source.classes), source.train.labels
    if cfg.data.class_columns:
        return list(cfg.data.class_columns), None
    id_col = cfg.data.id_column
    if id_col not in solution.columns:
        raise KitError(f"{solution_name}: no id column '{id_col}' (columns: {list(solution.columns)[:8]}); set data.id_column")
    others = [c for c in solution.columns if c != id_col]
    if len(others) > 1:
        return others, None
    if not others:
        raise KitError(f"{solution_name}: only the id column '{id_col}'; a solution needs the class columns or one label column")
    seen = set(solution[others[0]].dropna().tolist())
    if kind == "label" and len(submission.columns) == 2 and id_col in submission.columns:  # label format: its labels are classes too
        seen |= set(submission.drop(columns=[id_col]).iloc[:, 0].dropna().tolist())
    return sorted(str(c) for c in seen), None


def align_rows(ids_sub: np.ndarray, y_sub: np.ndarray, ids_sol: np.ndarray, source: str) -> np.ndarray:
    """Rows of `y_sub` in the solution's id order; KitError when the id sets differ."""
    row_of = {i: r for r, i in enumerate(ids_sub.tolist())}
    missing = [i for i in ids_sol.tolist() if i not in row_of]
    extra = len(ids_sub) - (len(ids_sol) - len(missing))
    if missing or extra:
        raise KitError(
            f"{source}: ids differ from the solution ({len(missing)} missing, e.g. {missing[:3]}; {extra} not in the solution)"
        )
    return y_sub[[row_of[i] for i in ids_sol.tolist()]]


def _check_unique(ids: np.ndarray, source: str) -> None:
    seen: dict[str, int] = {}
    for row, i in enumerate(ids.tolist()):
        if i in seen:
            raise KitError(f"{source}: row {row + 2} repeats id {i!r} of row {seen[i] + 2}; each test id must appear once")
        seen[i] = row


def _warn_unless_submittable(path: Path, cfg: CompetitionConfig, classes: list[str], console: Console) -> None:
    """One warning line when `kit submit` would refuse the file for its form (order, format, columns)."""
    if not cfg.data.dir.exists():
        return
    try:
        check_submission_file(path, cfg, classes)
    except KitError as exc:
        console.print(f"warning: `kit submit` would refuse this file: {' '.join(str(exc).split())}",
                      style="yellow", markup=False, highlight=False, soft_wrap=True)
