"""Submission files: written in exactly the competition's sample_submission format and checked
before they touch the disk.

A submission the leaderboard rejects (wrong id order, a missing column, two labels in a row, no
rows at all) costs one of a few daily submissions, so `write_submission` validates against the
sample first, and `kit submit` and `kit score` validate again with the same rules.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kit.config import CompetitionConfig
from kit.errors import KitError
from kit.files import atomic_write, read_text
from kit.paths import provenance_json, submission_csv
from kit.records import BlendProvenance, SubmissionMeta

SYNTHETIC_MARKER = "SYNTHETIC"


def read_csv_str(path: str | Path, remedy: str = "check the file") -> pd.DataFrame:
    """Read a CSV with every column as text, so ids like '007' and values like '1.0' stay as written.

    Every way the file can be broken (missing, empty, not UTF-8, a row with more or fewer fields than
    the header, an open quote) is one KitError line naming the file; a header without rows is
    returned as an empty frame, for the caller to judge.
    """
    path = Path(path)
    text = read_text(path, remedy)
    if not text.strip():
        raise KitError(f"{path}: file is empty; {remedy}")
    _check_field_counts(text, path, remedy)
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise KitError(f"{path}: not a readable CSV ({' '.join(str(exc).split())}); {remedy}") from None


def _check_field_counts(text: str, path: Path, remedy: str) -> None:
    """Every row has the header's number of fields: pandas would otherwise read a first row with one
    field too many as an index column, silently shifting every value."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
        for row in reader:
            if row and len(row) != len(header):
                raise KitError(f"{path}: line {reader.line_num} has {len(row)} fields, the header has {len(header)}; {remedy}")
    except csv.Error as exc:
        raise KitError(f"{path}: not a readable CSV (line {reader.line_num}: {exc}); {remedy}") from None


def sample_path(cfg: CompetitionConfig) -> Path | None:
    """The competition's sample_submission, or None when the source has none (MedMNIST)."""
    if cfg.data.source != "kaggle":
        return None
    path = cfg.data.dir / cfg.data.sample_submission
    return path if path.is_file() else None


def read_sample(path: Path) -> pd.DataFrame:
    """The sample submission, which must have rows (a header alone would let a 0-row submission pass)
    and each id once (a file matching a sample with a repeated id would repeat it, and be refused by Kaggle)."""
    remedy = "download the competition data again (`kit download`)"
    sample = read_csv_str(path, remedy)
    if sample.empty:
        raise KitError(f"{path}: has a header but no rows, so no submission can be checked against it; {remedy}")
    ids = sample.iloc[:, 0].astype(str)
    repeated = ids.duplicated(keep=False).to_numpy()
    if repeated.any():
        rows = [int(r) + 2 for r in np.flatnonzero(repeated)[:2]]
        raise KitError(f"{path}: rows {rows[0]} and {rows[1]} have the same id {ids.iloc[rows[0] - 2]!r} (column "
                       f"'{sample.columns[0]}'); each test id must appear once; {remedy}")
    return sample


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


def to_indicator(
    frame: pd.DataFrame, classes: list[str], id_column: str, source: str, separator: str | None = None, none_label: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (n, C) uint8 indicator) from a one-hot or label-column frame; KitError names the bad row.
    A label column holds one class per row, or (multi-label, `separator` given) classes joined by it,
    `none_label` standing for none."""
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
        names = [] if label == none_label else label.split(separator) if separator and isinstance(label, str) else [label]
        for name in names:
            if not isinstance(name, str) or name.strip() not in index:
                raise KitError(f"{source}: row {row + 2} (id {ids[row]}) has label {name!r}, not one of the {len(classes)} classes")
            out[row, index[name.strip()]] = 1
    return ids, out


def validate_submission(
    df: pd.DataFrame,
    sample_df: pd.DataFrame,
    task: str,
    *,
    classes: list[str] | None = None,
    source: str = "submission",
    reference: str = "the sample submission",
    separator: str | None = None,
    none_label: str | None = None,
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
    if len(sample_df) == 0:
        raise KitError(f"{source}: {reference} has no rows, so no submission can match it; a submission needs one row per test id")
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
    ids, indicator = to_indicator(df, list(classes), id_column, source, separator, none_label)
    check_one_label_per_row(ids, indicator, task, source)


def check_one_label_per_row(ids: np.ndarray, indicator: np.ndarray, task: str, source: str) -> None:
    """Multi-class rows need exactly one positive class (a solution's as much as a submission's)."""
    if task != "multi-class":
        return
    counts = indicator.sum(axis=1)
    bad = np.flatnonzero(counts != 1)
    if bad.size:
        row = int(bad[0])
        raise KitError(
            f"{source}: row {row + 2} (id {ids[row]}) has {int(counts[row])} positive classes; multi-class needs exactly one "
            f"({bad.size} rows break this)"
        )


def _value_text(sample: pd.DataFrame, classes: list[str]) -> tuple[str, str]:
    """How the sample writes 0 and 1 ('0'/'1' or '0.0'/'1.0'), so the output looks like it."""
    if len(sample) and any("." in str(v) for v in sample[classes].iloc[0].tolist()):
        return "0.0", "1.0"
    return "0", "1"


def build_submission(
    pred: np.ndarray, test_ids: np.ndarray, classes: list[str], sample: pd.DataFrame, id_column: str,
    *,
    separator: str | None = None, none_label: str | None = None,
) -> pd.DataFrame:
    """Fill the sample's frame with `pred` rows matched by id (the sample's order wins). A one-label-column
    sample gets each row's class name (integers stay integers: they are the names); with a `separator`
    (multi-label) the row's classes joined by it, and `none_label` for a row of none."""
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
        out[[c for c in sample.columns if c != id_column][0]] = _label_cells(ordered, classes, separator, none_label)
    return out[list(sample.columns)]


def _label_cells(ordered: np.ndarray, classes: list[str], separator: str | None, none_label: str | None) -> np.ndarray:
    """The label column's cells: one class name per row, or (multi-label) the row's classes joined by `separator`."""
    counts = ordered.sum(axis=1)
    if separator is None:
        if (counts != 1).any():
            raise KitError("sample submission has one label column, but some rows have no or several predicted classes")
        return np.asarray(classes, dtype=object)[ordered.argmax(axis=1)]
    if (counts == 0).any() and none_label is None:
        raise KitError(
            f"{int((counts == 0).sum())} rows have no predicted class and the label column has no value for none; "
            "set data.none_label to the competition's (e.g. \"No Finding\")"
        )
    names = np.asarray(classes, dtype=object)
    return np.array([separator.join(names[row == 1]) if row.any() else none_label for row in ordered], dtype=object)


def write_submission(
    pred: np.ndarray,
    test_ids: np.ndarray,
    classes: list[str],
    cfg: CompetitionConfig,
    name: str,
    provenance: dict[str, Any],
) -> Path:
    """Write submissions/<name>.csv in the sample's format (validated first) and <name>.json beside it: the file's
    own fields, then `provenance` (a blend's is checked as kit.records.BlendProvenance)."""
    classes = [str(c) for c in classes]
    spath = sample_path(cfg)
    sample = read_sample(spath) if spath is not None else template_frame(test_ids, classes, cfg.data.id_column)
    reference = "the sample submission" if spath is not None else "the test ids of the data source"
    text = submission_text(pred, test_ids, classes, cfg, sample, source=f"submission {name}", reference=reference)
    out = submission_csv(cfg, name)
    atomic_write(out, lambda f: f.write(text.encode()))
    meta = {
        "csv_sha256": hashlib.sha256(text.encode()).hexdigest(),  # `kit submit` uses this JSON only beside these bytes
        "name": name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "task": cfg.task,
        "competition": cfg.kaggle.competition,
        "data_dir": str(cfg.data.dir),
        "synthetic": is_synthetic(cfg),
        "format": "template" if spath is None else submission_format(sample, classes, cfg.data.id_column),
        "sample_submission": None if spath is None else str(spath),
        "rows": len(sample),
        **provenance,
    }
    record = BlendProvenance if BlendProvenance.is_one(meta) else SubmissionMeta
    record.parse(meta, provenance_json(out)).write(provenance_json(out))
    return out


def submission_text(pred: np.ndarray, test_ids: np.ndarray, classes: list[str], cfg: CompetitionConfig, sample: pd.DataFrame, *,
                    source: str, reference: str) -> str:
    """The CSV text of `pred` in `sample`'s format, validated against it (what `kit blend` and `kit predict` write)."""
    separator, none_label = label_joining(cfg)
    frame = build_submission(pred, test_ids, classes, sample, cfg.data.id_column, separator=separator, none_label=none_label)
    validate_submission(frame, sample, cfg.task, classes=classes, source=source, reference=reference, separator=separator, none_label=none_label)
    return frame.to_csv(index=False, lineterminator="\n")


def label_joining(cfg: CompetitionConfig) -> tuple[str | None, str | None]:
    """(separator, none value) of a one-label-column submission: multi-label rows join their classes."""
    if cfg.task != "multi-label":
        return None, None
    return cfg.data.label_separator, cfg.data.none_label


def is_synthetic(cfg: CompetitionConfig) -> bool:
    """Data made by `kit synth` carries a SYNTHETIC marker file in its directory."""
    return (cfg.data.dir / SYNTHETIC_MARKER).exists()


def check_submission_file(path: Path, cfg: CompetitionConfig, classes: list[str] | None = None) -> pd.DataFrame:
    """Validate a written submission file against the competition's sample (used again by `kit submit`)."""
    frame = read_csv_str(path, "write it again with `kit blend`")
    spath = sample_path(cfg)
    if spath is None:  # no sample (MedMNIST): the source's test ids and classes make the template
        from kit.data.sources import open_source

        source = open_source(cfg)
        classes = list(source.classes) if classes is None else classes
        sample = template_frame(np.asarray(source.test.ids, dtype=str), classes, cfg.data.id_column)
    else:
        sample = read_sample(spath)
        if classes is None and len(sample.columns) == 2:  # one label column: its values must be the training classes
            from kit.data.sources import open_source

            classes = list(open_source(cfg).classes)
    reference = "the sample submission" if spath is not None else "the test ids of the data source"
    separator, none_label = label_joining(cfg)
    validate_submission(frame, sample, cfg.task, classes=classes, source=str(path), reference=reference, separator=separator, none_label=none_label)
    return frame
