"""Submission files: written in exactly the competition's sample_submission format and checked
before they touch the disk.

A submission the leaderboard rejects (wrong id order, a missing column, two labels in a row, no
rows at all) costs one of a few daily submissions, so `write_submission` validates against the
sample first, and `kit submit` and `kit score` validate again with the same rules.

A submission holds what the metric scores (kit.decision.metrics, the metric's `kind`): labels for a label
metric; for a probability or ranking metric (log-loss, AUC, mAP), probabilities in [0, 1]:
- one-hot sample (a column per class): one probability column per class, in the sample's order (rows of a
  multi-class submission sum to 1);
- one label column and two classes (a binary `image_name,target` sample): the second class's probability;
- the long format (`ID_<image>_<class>,Label`: one row per image × class, ids ending in `_<class>`): each
  row the probability of its class for its image.
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
from kit.files import atomic_write, decode_text, read_text
from kit.paths import provenance_json, submission_csv
from kit.records import BlendProvenance, SubmissionMeta

SYNTHETIC_MARKER = "SYNTHETIC"
SUM_TOLERANCE = 1e-4  # a multi-class probability row must sum to 1 within this (written with 9 significant digits)


def read_csv_str(path: str | Path, remedy: str = "check the file") -> pd.DataFrame:
    """Read a CSV with every column as text, so ids like '007' and values like '1.0' stay as written.

    Every way the file can be broken (missing, empty, not UTF-8, a row with more or fewer fields than
    the header, an open quote) is one KitError line naming the file; a header without rows is
    returned as an empty frame, for the caller to judge.
    """
    return parse_csv_text(read_text(path, remedy), Path(path), remedy)


def parse_csv_text(text: str, path: Path, remedy: str = "check the file") -> pd.DataFrame:
    """`read_csv_str` of text already read (from `path`, named in every message)."""
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
    """'one-hot' when every class is a column of the frame, 'long' when it has one value column and every id
    ends in `_<class>` (one row per image × class), 'label' when it has one label column."""
    if id_column not in sample.columns:
        id_column = sample.columns[0] if len(sample.columns) == 2 and _long_keys(sample.iloc[:, 0], classes) is not None else id_column
    if id_column not in sample.columns:
        raise KitError(f"{source}: no id column '{id_column}' (columns: {list(sample.columns)[:8]}); set data.id_column")
    others = [c for c in sample.columns if c != id_column]
    if set(classes) <= set(others):
        return "one-hot"
    if len(others) == 1:
        return "long" if len(sample) and _long_keys(sample[id_column], classes) is not None else "label"
    missing = [c for c in classes if c not in others]
    raise KitError(
        f"{source}: columns {others[:8]} are neither the class columns (missing e.g. {missing[:3]}) "
        "nor one label column; check data.class_columns / data.label_column"
    )


def _long_keys(ids: pd.Series, classes: list[str]) -> tuple[list[str], list[int]] | None:
    """(image part, class index) of every long-format id `<image>_<class>`, or None when an id ends in no class."""
    by_length = sorted(range(len(classes)), key=lambda k: -len(classes[k]))  # the longest class name that fits
    images, class_index = [], []
    for value in ids.astype(str).tolist():
        k = next((k for k in by_length if value.endswith("_" + classes[k])), None)
        if k is None:
            return None
        images.append(value[: -len(classes[k]) - 1])
        class_index.append(k)
    return images, class_index


def _image_row(image: str, row_of: dict[str, int]) -> int | None:
    """The test row of a long-format id's image part: the id itself, or without a leading token (`ID_<image>`)."""
    if image in row_of:
        return row_of[image]
    head, _, rest = image.partition("_")
    return row_of.get(rest) if rest else None


def to_values(frame: pd.DataFrame, classes: list[str], id_column: str, source: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, (n, C) float64 values in [0, 1]) from a probability submission (or a solution) in any of the three
    formats; a binary label column gives the second class's probability (the first's is 1 − it); a long-format
    frame gives one row per image. KitError names the bad row; multi-class rows must sum to 1 (one-hot frames)."""
    fmt = submission_format(frame, classes, id_column, source)
    if fmt == "one-hot":
        ids = frame[id_column].astype(str).to_numpy()
        values = _probabilities(frame[classes], ids, source)
        sums = values.sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1) > SUM_TOLERANCE) if task == "multi-class" else np.array([], dtype=int)
        if bad.size:
            row = int(bad[0])
            raise KitError(f"{source}: row {row + 2} (id {ids[row]}) sums to {sums[row]:.6g}; multi-class probabilities must sum to 1 "
                           f"({bad.size} rows break this)")
        return ids, values
    value_column = [c for c in frame.columns if c != (id_column if id_column in frame.columns else frame.columns[0])][0]
    if fmt == "long":
        id_col = id_column if id_column in frame.columns else frame.columns[0]
        images, class_index = _long_keys(frame[id_col], classes)  # type: ignore[misc]
        column = _probabilities(frame[[value_column]], frame[id_col].astype(str).to_numpy(), source)[:, 0]
        order = list(dict.fromkeys(images))
        row_of = {image: r for r, image in enumerate(order)}
        out = np.full((len(order), len(classes)), np.nan)
        out[[row_of[i] for i in images], class_index] = column
        missing = np.argwhere(np.isnan(out))
        if missing.size:
            r, k = missing[0]
            raise KitError(f"{source}: no row for image {order[r]!r} and class '{classes[k]}' (long format: one row per image and class)")
        return np.asarray(order, dtype=object).astype(str), out
    if len(classes) != 2 or task != "multi-class":
        raise KitError(f"{source}: one value column '{value_column}' holds probabilities only for two classes (a binary target); "
                       f"this competition has {len(classes)}: write one column per class")
    ids = frame[id_column].astype(str).to_numpy()
    p = _probabilities(frame[[value_column]], ids, source)[:, 0]
    return ids, np.stack([1 - p, p], axis=1)


def _cells_as_numbers(values: pd.DataFrame, ids: np.ndarray, source: str, expected: str) -> np.ndarray:
    """The frame's cells as floats; KitError naming the first row with a missing cell, or saying what they must hold."""
    if values.isna().any().any():
        row = int(np.flatnonzero(values.isna().any(axis=1).to_numpy())[0])
        raise KitError(f"{source}: row {row + 2} (id {ids[row]}) has a missing value")
    try:
        return values.astype(float).to_numpy()
    except ValueError:
        raise KitError(f"{source}: {expected}") from None


def _probabilities(values: pd.DataFrame, ids: np.ndarray, source: str) -> np.ndarray:
    """The frame's cells as finite numbers in [0, 1]; KitError naming the first row that is not."""
    numbers = _cells_as_numbers(values, ids, source, "probability columns must hold numbers in [0, 1]")
    bad = ~(np.isfinite(numbers) & (numbers >= 0) & (numbers <= 1))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise KitError(f"{source}: row {row + 2} (id {ids[row]}), column '{values.columns[col]}' is {values.iat[row, col]!r}; "
                       "expected a probability in [0, 1]")
    return numbers


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
        numbers = _cells_as_numbers(values, ids, source, "class columns must hold 0 or 1")
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
    kind: str = "label",
) -> None:
    """Raise KitError unless `df` has the sample's columns and ids (same order), no missing values,
    values the sample's format allows, and one positive per row for multi-class; for a probability or
    ranking metric (`kind`), probabilities in [0, 1] (multi-class rows summing to 1)."""
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
    if kind != "label" and (classes is not None or len(others) > 1):
        to_values(df, list(classes) if classes is not None else others, id_column, source, task)
        return
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
    separator: str | None = None, none_label: str | None = None, kind: str = "label",
) -> pd.DataFrame:
    """Fill the sample's frame with `pred` rows matched by id (the sample's order wins). A one-label-column
    sample gets each row's class name (integers stay integers: they are the names); with a `separator`
    (multi-label) the row's classes joined by it, and `none_label` for a row of none. For a probability or
    ranking metric (`kind`), `pred` holds probabilities, written in the sample's format (module docstring)."""
    test_ids = np.asarray(test_ids, dtype=str)
    if pred.shape != (len(test_ids), len(classes)):
        raise KitError(f"predictions have shape {pred.shape}, expected ({len(test_ids)}, {len(classes)})")
    row_of = {i: r for r, i in enumerate(test_ids.tolist())}
    if kind != "label":
        return _probability_frame(np.asarray(pred, dtype=np.float64), row_of, classes, sample, id_column)
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


def _probability_text(p: np.ndarray) -> np.ndarray:
    """Probabilities as text with 9 significant digits (enough to keep every rank and log-loss to 1e-9)."""
    return np.array([f"{x:.9g}" for x in np.clip(np.asarray(p, dtype=np.float64).ravel(), 0.0, 1.0)], dtype=object).reshape(np.shape(p))


def _probability_frame(pred: np.ndarray, row_of: dict[str, int], classes: list[str], sample: pd.DataFrame, id_column: str) -> pd.DataFrame:
    """The sample's frame holding probabilities: a column per class, the second class's for a binary label column,
    or one row per image × class in the long format."""
    fmt = submission_format(sample, classes, id_column)
    id_col = id_column if id_column in sample.columns else sample.columns[0]
    out = sample[[id_col]].copy()
    out[id_col] = sample[id_col].astype(str)
    value_columns = [c for c in sample.columns if c != id_col]
    if fmt == "long":
        images, class_index = _long_keys(sample[id_col], classes)  # type: ignore[misc]
        rows = [_image_row(image, row_of) for image in images]
        missing = [images[j] for j, r in enumerate(rows) if r is None]
        if missing:
            raise KitError(f"sample submission: {len(missing)} long-format ids name images without a prediction (e.g. {missing[:3]}); "
                           "the test ids of the OOF files differ from the sample's: retrain on the current data")
        out[value_columns[0]] = _probability_text(pred[np.asarray(rows), np.asarray(class_index)])
        return out[list(sample.columns)]
    missing = [i for i in sample[id_col].astype(str).tolist() if i not in row_of]
    if missing:
        raise KitError(f"sample submission: {len(missing)} ids have no prediction (e.g. {missing[:3]}); "
                       "the test ids of the OOF files differ from the sample's: retrain on the current data")
    ordered = pred[[row_of[i] for i in sample[id_col].astype(str).tolist()]]
    if fmt == "one-hot":
        for k, col in enumerate(classes):
            out[col] = _probability_text(ordered[:, k])
        for col in sample.columns:
            if col not in out.columns:
                out[col] = sample[col].to_numpy()
        return out[list(sample.columns)]
    if len(classes) != 2:
        raise KitError(f"sample submission has one value column but the competition has {len(classes)} classes; "
                       "a probability submission needs one column per class (or two classes: a binary target)")
    out[value_columns[0]] = _probability_text(ordered[:, 1])
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
    kind = metric_kind(cfg)
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
        **({"values": "probabilities"} if kind != "label" else {}),
        "sample_submission": None if spath is None else str(spath),
        "rows": len(sample),
        **provenance,
    }
    record = BlendProvenance if BlendProvenance.is_one(meta) else SubmissionMeta
    record.parse(meta, provenance_json(out)).write(provenance_json(out))
    return out


def submission_text(pred: np.ndarray, test_ids: np.ndarray, classes: list[str], cfg: CompetitionConfig, sample: pd.DataFrame, *,
                    source: str, reference: str) -> str:
    """The CSV text of `pred` in `sample`'s format, validated against it (what `kit blend` and `kit predict` write):
    labels, or probabilities where the config's metric scores them (`metric_kind`)."""
    separator, none_label = label_joining(cfg)
    kind = metric_kind(cfg)
    frame = build_submission(pred, test_ids, classes, sample, cfg.data.id_column, separator=separator, none_label=none_label, kind=kind)
    validate_submission(frame, sample, cfg.task, classes=classes, source=source, reference=reference, separator=separator,
                        none_label=none_label, kind=kind)
    return frame.to_csv(index=False, lineterminator="\n")


def metric_kind(cfg: CompetitionConfig) -> str:
    """What the config's metric scores, so what its submissions hold: "label", "probability" or "ranking"."""
    from kit.decision.metrics import build_metric

    return build_metric(cfg.metric).kind


def label_joining(cfg: CompetitionConfig) -> tuple[str | None, str | None]:
    """(separator, none value) of a one-label-column submission: multi-label rows join their classes."""
    if cfg.task != "multi-label":
        return None, None
    return cfg.data.label_separator, cfg.data.none_label


def is_synthetic(cfg: CompetitionConfig) -> bool:
    """Data made by `kit synth` carries a SYNTHETIC marker file in its directory."""
    return (cfg.data.dir / SYNTHETIC_MARKER).exists()


def check_submission_file(path: Path, cfg: CompetitionConfig, classes: list[str] | None = None,
                          data: bytes | None = None) -> pd.DataFrame:
    """Validate a written submission file against the competition's sample (used again by `kit submit`).
    With `data` (the file's bytes, read once by the caller) those bytes are checked, not the file as it is now."""
    remedy = "write it again with `kit blend`"
    frame = read_csv_str(path, remedy) if data is None else parse_csv_text(decode_text(data, path), Path(path), remedy)
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
    validate_submission(frame, sample, cfg.task, classes=classes, source=str(path), reference=reference, separator=separator, none_label=none_label,
                        kind=metric_kind(cfg))
    return frame
