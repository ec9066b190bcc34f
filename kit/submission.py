"""Submission files: written in exactly the competition's sample_submission format, checked
before they touch the disk, and scored locally against a solution CSV.

A submission the leaderboard rejects (wrong id order, a missing column, two labels in a row)
costs one of a few daily submissions, so `write_submission` validates against the sample first
and `kit submit` validates again before sending anything.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from kit.config import CompetitionConfig
from kit.errors import KitError
from kit.files import atomic_write, write_json

SYNTHETIC_MARKER = "SYNTHETIC"


# --- reading the formats ------------------------------------------------------------------------


def read_csv_str(path: str | Path) -> pd.DataFrame:
    """Read a CSV with every column as text, so ids like '007' and values like '1.0' stay as written."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise KitError(f"{path}: not a readable CSV ({exc})") from None


def sample_path(cfg: CompetitionConfig) -> Path | None:
    """The competition's sample_submission, or None when the source has none (MedMNIST)."""
    if cfg.data.source != "kaggle":
        return None
    path = cfg.data.dir / cfg.data.sample_submission
    return path if path.is_file() else None


def submission_format(sample: pd.DataFrame, classes: list[str], id_column: str, source: str = "sample submission") -> str:
    """'one-hot' when every class is a column of the frame, 'label' when it has one label column."""
    if id_column not in sample.columns:
        raise KitError(f"{source}: no id column '{id_column}' (columns: {list(sample.columns)[:8]}); set data.id_column")
    others = [c for c in sample.columns if c != id_column]
    if set(classes) <= set(others):
        return "one-hot"
    if len(others) == 1:
        return "label"
    missing = [c for c in classes if c not in others]
    raise KitError(
        f"{source}: columns {others[:8]} are neither the class columns (missing e.g. {missing[:3]}) "
        "nor one label column; check data.class_columns / data.label_column"
    )


def template_frame(test_ids: np.ndarray, classes: list[str], id_column: str) -> pd.DataFrame:
    """The format used when the source has no sample_submission: id + one 0/1 column per class."""
    frame = pd.DataFrame({id_column: np.asarray(test_ids, dtype=str)})
    for c in classes:
        frame[c] = "0"
    return frame


def to_indicator(frame: pd.DataFrame, classes: list[str], id_column: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (n, C) uint8 indicator) from a one-hot or label-column frame; KitError names the bad row."""
    fmt = submission_format(frame, classes, id_column, source)
    ids = frame[id_column].astype(str).to_numpy()
    if fmt == "one-hot":
        values = frame[classes]
        if values.isna().any().any():
            row = int(np.flatnonzero(values.isna().any(axis=1).to_numpy())[0])
            raise KitError(f"{source}: row {row + 2} (id {ids[row]}) has a missing value")
        try:
            numbers = values.astype(float).to_numpy()
        except ValueError:
            raise KitError(f"{source}: class columns must hold 0 or 1") from None
        bad = ~np.isin(numbers, (0.0, 1.0))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise KitError(f"{source}: row {row + 2} (id {ids[row]}), column '{classes[col]}' is {values.iat[row, col]!r}; expected 0 or 1")
        return ids, numbers.astype(np.uint8)
    label_col = [c for c in frame.columns if c != id_column][0]
    labels = frame[label_col]
    index = {c: k for k, c in enumerate(classes)}
    out = np.zeros((len(frame), len(classes)), dtype=np.uint8)
    for row, label in enumerate(labels.tolist()):
        if not isinstance(label, str) or label not in index:
            raise KitError(f"{source}: row {row + 2} (id {ids[row]}) has label {label!r}, not one of the {len(classes)} classes")
        out[row, index[label]] = 1
    return ids, out


# --- validation -------------------------------------------------------------------------------


def validate_submission(
    df: pd.DataFrame,
    sample_df: pd.DataFrame,
    task: str,
    classes: list[str] | None = None,
    source: str = "submission",
    reference: str = "the sample submission",
) -> None:
    """Raise KitError unless `df` has the sample's columns and ids (same order), no missing values,
    values the sample's format allows, and one positive per row for multi-class."""
    if list(df.columns) != list(sample_df.columns):
        missing = [c for c in sample_df.columns if c not in df.columns]
        extra = [c for c in df.columns if c not in sample_df.columns]
        raise KitError(
            f"{source}: columns differ from {reference} (missing {missing[:5]}, unexpected {extra[:5]}, "
            "or a different order); write it with `kit blend` or fix the header"
        )
    id_column = sample_df.columns[0]
    if len(df) != len(sample_df):
        raise KitError(f"{source}: {len(df)} rows, expected {len(sample_df)} (one per test id, as in {reference})")
    got, want = df[id_column].astype(str).to_numpy(), sample_df[id_column].astype(str).to_numpy()
    wrong = np.flatnonzero(got != want)
    if wrong.size:
        row = int(wrong[0])
        raise KitError(
            f"{source}: row {row + 2} has id {got[row]!r} where {reference} has {want[row]!r} "
            f"({wrong.size} rows differ); ids must be those of {reference}, in its order"
        )
    if df.isna().any().any():
        row = int(np.flatnonzero(df.isna().any(axis=1).to_numpy())[0])
        col = df.columns[df.iloc[row].isna().to_numpy()][0]
        raise KitError(f"{source}: row {row + 2} (id {got[row]}), column '{col}' is missing a value")
    others = [c for c in df.columns if c != id_column]
    if classes is None:
        classes = others if len(others) > 1 else None
    if classes is None:  # label column without a known class list: only non-empty strings can be checked
        return
    _, indicator = to_indicator(df, list(classes), id_column, source)
    if task == "multi-class":
        counts = indicator.sum(axis=1)
        bad = np.flatnonzero(counts != 1)
        if bad.size:
            row = int(bad[0])
            raise KitError(
                f"{source}: row {row + 2} (id {got[row]}) has {int(counts[row])} positive classes; multi-class needs exactly one "
                f"({bad.size} rows break this)"
            )


# --- writing ----------------------------------------------------------------------------------


def _value_text(sample: pd.DataFrame, classes: list[str]) -> tuple[str, str]:
    """How the sample writes 0 and 1 ('0'/'1' or '0.0'/'1.0'), so the output looks like it."""
    if len(sample) and any("." in str(v) for v in sample[classes].iloc[0].tolist()):
        return "0.0", "1.0"
    return "0", "1"


def build_submission(pred: np.ndarray, test_ids: np.ndarray, classes: list[str], sample: pd.DataFrame, id_column: str) -> pd.DataFrame:
    """Fill the sample's frame with `pred` rows matched by id (the sample's order wins)."""
    test_ids = np.asarray(test_ids, dtype=str)
    if pred.shape != (len(test_ids), len(classes)):
        raise KitError(f"predictions have shape {pred.shape}, expected ({len(test_ids)}, {len(classes)})")
    row_of = {i: r for r, i in enumerate(test_ids.tolist())}
    sample_ids = sample[id_column].astype(str).tolist()
    missing = [i for i in sample_ids if i not in row_of]
    if missing:
        raise KitError(
            f"sample submission: {len(missing)} ids have no prediction (e.g. {missing[:3]}); "
            "the test ids of the OOF files differ from the sample's: retrain on the current data"
        )
    order = np.array([row_of[i] for i in sample_ids], dtype=np.int64)
    ordered = np.asarray(pred, dtype=np.uint8)[order]
    out = sample[[id_column]].copy()
    out[id_column] = sample[id_column].astype(str)
    if submission_format(sample, classes, id_column) == "one-hot":
        zero, one = _value_text(sample, classes)
        for k, col in enumerate(classes):
            out[col] = np.where(ordered[:, k] == 1, one, zero)
        for col in sample.columns:  # any other column of the sample keeps the sample's values
            if col not in out.columns:
                out[col] = sample[col].to_numpy()
    else:
        label_col = [c for c in sample.columns if c != id_column][0]
        if (ordered.sum(axis=1) != 1).any():
            raise KitError("sample submission has one label column, but some rows have no or several predicted classes")
        out[label_col] = np.asarray(classes, dtype=object)[ordered.argmax(axis=1)]
    return out[list(sample.columns)]


def write_submission(
    pred: np.ndarray,
    test_ids: np.ndarray,
    classes: list[str],
    cfg: CompetitionConfig,
    name: str,
    provenance: dict[str, Any],
) -> Path:
    """Write submissions/<name>.csv in the sample's format (validated first) and <name>.json beside it."""
    classes = [str(c) for c in classes]
    spath = sample_path(cfg)
    sample = read_csv_str(spath) if spath is not None else template_frame(test_ids, classes, cfg.data.id_column)
    frame = build_submission(pred, test_ids, classes, sample, cfg.data.id_column)
    reference = "the sample submission" if spath is not None else "the test ids of the data source"
    validate_submission(frame, sample, cfg.task, classes, source=f"submission {name}", reference=reference)
    out = cfg.paths.submissions / f"{name}.csv"
    text = frame.to_csv(index=False, lineterminator="\n")
    atomic_write(out, lambda f: f.write(text.encode()))
    meta = {
        "name": name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "task": cfg.task,
        "competition": cfg.kaggle.competition,
        "data_dir": str(cfg.data.dir),
        "synthetic": is_synthetic(cfg),
        "format": "template" if spath is None else submission_format(sample, classes, cfg.data.id_column),
        "sample_submission": None if spath is None else str(spath),
        "rows": len(frame),
        **provenance,
    }
    write_json(out.with_suffix(".json"), meta)
    return out


def is_synthetic(cfg: CompetitionConfig) -> bool:
    """Data made by `kit synth` carries a SYNTHETIC marker file in its directory."""
    return (cfg.data.dir / SYNTHETIC_MARKER).exists()


def check_submission_file(path: Path, cfg: CompetitionConfig, classes: list[str] | None = None) -> pd.DataFrame:
    """Validate a written submission file against the competition's sample (used again by `kit submit`)."""
    frame = read_csv_str(path)
    spath = sample_path(cfg)
    if spath is None:  # no sample (MedMNIST): the source's test ids and classes make the template
        from kit.data.sources import open_source

        source = open_source(cfg)
        classes = list(source.classes) if classes is None else classes
        sample = template_frame(np.asarray(source.test.ids, dtype=str), classes, cfg.data.id_column)
    else:
        sample = read_csv_str(spath)
    reference = "the sample submission" if spath is not None else "the test ids of the data source"
    validate_submission(frame, sample, cfg.task, classes, source=str(path), reference=reference)
    return frame


# --- local scoring ----------------------------------------------------------------------------


def _classes_and_train_labels(cfg: CompetitionConfig) -> tuple[list[str], np.ndarray | None]:
    """Class names (and train labels, for the majority-class baseline) from the data source."""
    try:
        from kit.data.sources import open_source
    except ImportError:  # data part not installed: fall back to the config / sample
        open_source = None
    if open_source is not None:
        source = open_source(cfg)
        return list(source.classes), source.train.labels
    if cfg.data.class_columns:
        return list(cfg.data.class_columns), None
    raise KitError(f"{cfg.source_file}: cannot tell the class names; set data.class_columns")


def _align(ids_sub: np.ndarray, y_sub: np.ndarray, ids_sol: np.ndarray, source: str) -> np.ndarray:
    row_of = {i: r for r, i in enumerate(ids_sub.tolist())}
    missing = [i for i in ids_sol.tolist() if i not in row_of]
    extra = len(ids_sub) - (len(ids_sol) - len(missing))
    if missing or extra:
        raise KitError(
            f"{source}: ids differ from the solution ({len(missing)} missing, e.g. {missing[:3]}; {extra} not in the solution)"
        )
    return y_sub[[row_of[i] for i in ids_sol.tolist()]]


def majority_prediction(n: int, train_labels: np.ndarray | None, y_true: np.ndarray) -> np.ndarray:
    """Multi-class trivial prediction: the training majority class everywhere (solution majority if no train labels)."""
    counts = (train_labels if train_labels is not None else y_true).sum(axis=0)
    pred = np.zeros((n, y_true.shape[1]), dtype=np.uint8)
    pred[:, int(np.argmax(counts))] = 1
    return pred


def argmax_prediction(logits: np.ndarray, task: str) -> np.ndarray:
    """The plain decision published solutions use: argmax (multi-class) or logit > 0 (multi-label)."""
    if task == "multi-label":
        return (logits > 0).astype(np.uint8)
    pred = np.zeros(logits.shape, dtype=np.uint8)
    pred[np.arange(len(logits)), logits.argmax(axis=1)] = 1
    return pred


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
        raise KitError(f"{cfg.source_file}: data.solution_csv is not set; pass --solution CSV")
    path = cfg.data.dir / cfg.data.solution_csv
    return read_csv_str(path), str(path)


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
    from kit.decision.metrics import build_metric, trivial_baseline

    metric = build_metric(cfg.metric)

    console = console or Console()
    classes, train_labels = _classes_and_train_labels(cfg)
    id_col = cfg.data.id_column
    if solution_csv is None:
        solution_frame, solution_name = default_solution(cfg)
    else:
        solution_frame, solution_name = read_csv_str(solution_csv), str(solution_csv)
    sol_ids, y_true = to_indicator(solution_frame, classes, id_col, solution_name)
    sub_ids, y_sub = to_indicator(read_csv_str(submission_csv), classes, id_col, str(submission_csv))
    y_pred = _align(sub_ids, y_sub, sol_ids, str(submission_csv))
    if cfg.task == "multi-class":
        baseline_pred = majority_prediction(len(y_true), train_labels, y_true)
        baseline = metric.score(y_true, baseline_pred)
    else:
        baseline = trivial_baseline(y_true, metric)
        baseline_pred = None
    score = metric.score(y_true, y_pred)
    per_class = metric.per_class(y_true, y_pred)
    result: dict[str, Any] = {
        "submission": str(submission_csv),
        "solution": solution_name,
        "score": float(score),
        "trivial_baseline": float(baseline),
        "per_class": {c: (None if np.isnan(s) else float(s)) for c, s in zip(classes, per_class)},
        "n": int(len(y_true)),
    }

    table = Table(title=f"{Path(submission_csv).name} vs {Path(solution_name).name} ({len(y_true)} rows)")
    table.add_column("class")
    table.add_column("N", justify="right")
    table.add_column("score", justify="right")
    if baseline_pred is not None:
        table.add_column("trivial", justify="right")
        base_per_class = metric.per_class(y_true, baseline_pred)
    for k, c in enumerate(classes):
        row = [c, str(int(y_true[:, k].sum())), _fmt(per_class[k])]
        if baseline_pred is not None:
            row.append(_fmt(base_per_class[k]))
        table.add_row(*row)
    console.print(table)

    if compare_argmax:
        result["argmax"] = argmax_scores(cfg, classes, sol_ids, y_true)
    summary = Table(title="Leaderboard metric on the solution")
    summary.add_column("what")
    summary.add_column("score", justify="right")
    multi_label = cfg.task == "multi-label"
    summary.add_row("trivial baseline (" + ("all negative" if multi_label else "majority class of train everywhere") + ")", _fmt(baseline))
    if compare_argmax:
        plain = "sigmoid > 0.5" if multi_label else "argmax"
        for variant, s in result["argmax"].items():
            summary.add_row(f"{variant} by {plain} (mean test logits)", _fmt(s))
        if result["argmax"]:
            best = max(result["argmax"], key=result["argmax"].get)
            result["best_argmax"] = {"variant": best, "score": result["argmax"][best]}
            summary.add_row(f"[bold]best single variant by {plain} ({best})", f"[bold]{_fmt(result['argmax'][best])}")
        else:
            summary.add_row(f"no oof/<variant>.npz for the variants {cfg.variants}", "—")
    summary.add_row(f"[bold]{Path(submission_csv).name}", f"[bold]{_fmt(score)}")
    console.print(summary)
    return result


def argmax_scores(cfg: CompetitionConfig, classes: list[str], sol_ids: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """Score of argmax over the mean test logits for each variant that has an OOF file."""
    from kit.artifacts import load_oof
    from kit.decision.metrics import build_metric

    metric = build_metric(cfg.metric)

    out: dict[str, float] = {}
    for variant in cfg.variants:
        path = cfg.paths.oof / f"{variant}.npz"
        if not path.is_file():
            continue
        oof = load_oof(path)
        if oof.classes.tolist() != classes:
            raise KitError(f"{path}: classes differ from the data source's; retrain it on this data")
        pred = argmax_prediction(oof.test_logits.mean(axis=0), cfg.task)
        out[variant] = float(metric.score(y_true, _align(oof.test_ids.astype(str), pred, sol_ids, str(path))))
    return out


def _fmt(x: float) -> str:
    return "—" if x is None or np.isnan(x) else f"{x:+.4f}"

