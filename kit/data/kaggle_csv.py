"""The Kaggle CSV layout: train.csv (one-hot class columns or one label column), image folders,
and the test ids from test.csv or sample_submission.csv.

Everything that can be checked without decoding an image is checked here (labels, duplicate ids,
sample_submission columns, image files present), so a bad dataset fails in a second with one line,
not an hour into training.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config import CompetitionConfig
from kit.data.common import DataSource, Split, fingerprint, first_items, warn
from kit.data.image_files import class_folder_images, describe, is_plain, locate
from kit.errors import KitError
from kit.files import read_csv


CLASS_FOLDER = "(class folder)"  # the label column of a train table read from class folders


def read_layout_csv(path: Path, id_column: str, cfg: CompetitionConfig, key: str) -> pd.DataFrame:
    """One of the competition's CSVs (ids as strings, "NA" an id like any other), with an id column and rows."""
    remedy = f"restore it from the competition download, or set data.{key} in {cfg.source_file}"
    frame = read_csv(path, id_column, remedy, text_columns=[cfg.data.patient_column or ""])  # "000012" stays "000012"
    if id_column not in frame.columns:
        raise KitError(
            f"{path}: no id column '{id_column}' (columns: {first_items(frame.columns, 8)}); set data.id_column in {cfg.source_file}"
        )
    return frame


def _check_unique_ids(ids: np.ndarray, path: Path) -> None:
    values, counts = np.unique(ids, return_counts=True)
    dup = values[counts > 1]
    if len(dup):
        raise KitError(f"{path}: {len(dup)} duplicate ids ({first_items(dup)}); each image must appear once")


def _labels_from_columns(frame: pd.DataFrame, classes: list[str], path: Path, cfg: CompetitionConfig) -> np.ndarray:
    absent = [c for c in classes if c not in frame.columns]
    if absent:
        raise KitError(f"{path}: class columns not found: {first_items(absent)}; fix data.class_columns in {cfg.source_file}")
    values = frame[classes].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        columns = [classes[k] for k in np.flatnonzero(bad.any(axis=0))]
        row, col = np.argwhere(bad)[0]
        cell = frame[classes[col]].iloc[row]
        shown_cell = "an empty cell" if pd.isna(cell) or str(cell).strip() == "" else repr(str(cell))
        if bad[:, col].mean() < 0.5:  # a column of 0/1 with a few bad cells: those cells are wrong, not the layout
            more = int(bad.sum()) - 1
            raise KitError(
                f"{path}: row {row + 2}, class column {_column_name(classes[col])} holds {shown_cell}, not 0 or 1"
                + (f" ({more} more such cells)" if more else "") + "; write 0 or 1 in each class cell"
            )
        shown = ", ".join(_column_name(c) for c in columns[:5])
        raise KitError(
            f"{path}: column{'s' if len(columns) > 1 else ''} {shown} hold{'' if len(columns) > 1 else 's'} values other than 0/1 "
            f"(row {row + 2}: {shown_cell}), so {'they are' if len(columns) > 1 else 'it is'} not one-hot class "
            f"columns; name the patient id column with data.patient_column and the class columns with data.class_columns "
            f"(or one label column with data.label_column) in {cfg.source_file}"
        )
    return values.astype(np.uint8)


def _column_name(column: str) -> str:
    """A column as the user sees it in the header: an empty name (a trailing comma) said as such."""
    if column.startswith("Unnamed: "):
        return f"{column!r} (an empty header field: a trailing comma in the header?)"
    return repr(column)


def label_order(names: set[str]) -> list[str]:
    """Class names of a label column in their natural order: numerically when all are integers, else alphabetically."""
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def split_labels(values: list[str], task: str, separator: str, none_label: str | None) -> list[list[str]]:
    """The class names of each cell: joined by `separator` for multi-label, one per cell otherwise;
    `none_label` (and an empty cell) stands for no class."""
    out = []
    for value in values:
        parts = value.split(separator) if task == "multi-label" else [value]
        out.append([p.strip() for p in parts if p.strip() and p.strip() != none_label])
    return out


def _labels_from_label_column(
    frame: pd.DataFrame, column: str, task: str, path: Path, cfg: CompetitionConfig, classes: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    if column not in frame.columns:
        raise KitError(f"{path}: no label column '{column}'; fix data.label_column in {cfg.source_file}")
    raw = frame[column].fillna("").astype(str).tolist()
    split = split_labels(raw, task, cfg.data.label_separator, cfg.data.none_label)
    if classes is None:
        classes = label_order({name for names in split for name in names})
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted({name for names in split for name in names if name not in index})
    if unknown:
        hint = "; if one of them means no class, set data.none_label" if task == "multi-label" and not cfg.data.none_label else ""
        raise KitError(f"{path}: column '{column}' has labels that are not classes: {first_items(unknown)}{hint}")
    labels = np.zeros((len(raw), len(classes)), dtype=np.uint8)
    for row, names in enumerate(split):
        labels[row, [index[n] for n in names]] = 1
    return labels, classes


def _sample_class_columns(cfg: CompetitionConfig, data_dir: Path) -> list[str] | None:
    """Class columns of sample_submission when it has them (more than one non-id column), else None."""
    path = data_dir / cfg.data.sample_submission
    if not path.is_file():
        return None
    header = read_layout_csv(path, cfg.data.id_column, cfg, "sample_submission").columns
    rest = [c for c in header if c != cfg.data.id_column]
    return rest if len(rest) > 1 else None


def _train_labels(cfg: CompetitionConfig, data_dir: Path, train: pd.DataFrame, patient: str | None) -> tuple[np.ndarray, list[str]]:
    """(n, C) labels and class names of train.csv, checked against the sample's class columns and the task."""
    d = cfg.data
    train_path = data_dir / (d.train_csv or describe(d.train_images))
    sample_classes = _sample_class_columns(cfg, data_dir)
    if d.train_csv is None:
        labels, classes = _labels_from_label_column(train, CLASS_FOLDER, "multi-class", train_path, cfg, sample_classes)
    elif d.label_column is not None:
        labels, classes = _labels_from_label_column(train, d.label_column, cfg.task, train_path, cfg, sample_classes)
    else:
        classes = list(d.class_columns) if d.class_columns else [c for c in train.columns if c not in (d.id_column, patient, d.patient_column)]
        if not classes:
            raise KitError(f"{train_path}: no class columns; set data.class_columns or data.label_column in {cfg.source_file}")
        labels = _labels_from_columns(train, classes, train_path, cfg)
    if sample_classes is not None and set(sample_classes) != set(classes):
        only_sample = [c for c in sample_classes if c not in classes]
        only_train = [c for c in classes if c not in sample_classes]
        raise KitError(
            f"{data_dir / d.sample_submission}: class columns differ from {train_path}: "
            f"only in sample_submission: {first_items(map(repr, only_sample)) or 'none'}; "  # quoted: a stray space shows
            f"only in train: {first_items(map(repr, only_train)) or 'none'}"
        )
    if cfg.task == "multi-class":
        active = labels.sum(axis=1)
        train_ids = train[d.id_column].astype(str).to_numpy(dtype=str)
        for bad, what in ((active == 0, "no active label"), (active > 1, "several active labels")):
            if bad.any():
                raise KitError(
                    f"{train_path}: {int(bad.sum())} rows have {what} (first ids: {first_items(train_ids[bad])}); "
                    'task is "multi-class": each row needs exactly one class'
                )
    return labels, classes


def _patient_groups(train: pd.DataFrame, patient: str | None) -> np.ndarray | None:
    """Patient id per row; an empty patient id is its own group, not one giant group of all empty ones."""
    if not patient:
        return None
    empty = train[patient].isna().to_numpy()
    groups = train[patient].astype(str).to_numpy(dtype=object)
    groups[empty] = [f"(no patient, row {k + 2})" for k in np.flatnonzero(empty)]
    return groups.astype(str)


def _image_paths(data_dir: Path, value: str | list[str], ids: np.ndarray, cfg: CompetitionConfig, key: str) -> np.ndarray:
    """One path per id: the pattern filled in, or found by listing the folders a glob or a list names."""
    try:
        if is_plain(value):
            return np.array([str(data_dir / value.format(id=i)) for i in ids], dtype=object)
        return locate(data_dir, value, ids, key, str(cfg.source_file))
    except (KeyError, IndexError, ValueError) as exc:
        raise KitError(f"{cfg.source_file}: data.{key} = '{describe(value)}' is not a valid pattern ({exc}); use e.g. 'train/{{id}}.png'") from None


def _stat_images(paths: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Missing mask and (path, size, mtime_ns) lines, from one cheap stat per file."""
    missing = np.zeros(len(paths), dtype=bool)
    lines = []
    for k, path in enumerate(paths):
        try:
            st = os.stat(path)
            lines.append(f"{path}\t{st.st_size}\t{st.st_mtime_ns}")
        except OSError:
            missing[k] = True
            lines.append(f"{path}\tmissing")
    return missing, lines


def _check_missing(missing: np.ndarray, paths: np.ndarray, split: str, cfg: CompetitionConfig, key: str) -> None:
    if not missing.any():
        return
    n = int(missing.sum())
    listed = first_items(paths[missing])
    if n == len(paths):  # none found: a wrong pattern or folder, which skipping would hide
        raise KitError(
            f"all {n} {split} images are missing ({listed}); data.{key} = '{describe(getattr(cfg.data, key))}' under data.dir = "
            f"'{cfg.data.dir}' finds none of them: check both in {cfg.source_file}"
        )
    if cfg.data.on_bad_image == "stop":
        raise KitError(
            f"{n} of {len(paths)} {split} images are missing ({listed}); check data.{key} in {cfg.source_file}, "
            'or set data.on_bad_image = "skip" to leave them out'
        )
    warn(f"{n} of {len(paths)} {split} images are missing and will be skipped: {listed}")


def _image_split(
    cfg: CompetitionConfig, data_dir: Path, name: str, ids: np.ndarray, listing: bytes,
    labels: np.ndarray | None, *, groups: np.ndarray | None, paths: np.ndarray | None = None,
) -> Split:
    """One split with its image paths checked and its fingerprints (the CSV's bytes, or the class folders'
    listing, + one stat per image)."""
    key = f"{name}_images"
    if paths is None:
        paths = _image_paths(data_dir, getattr(cfg.data, key), ids, cfg, key)
    missing, stat_lines = _stat_images(paths)
    _check_missing(missing, paths, name, cfg, key)
    data_fingerprint = fingerprint("kaggle", name, listing, "\n".join(stat_lines))
    prefix = len(str(data_dir)) + 1  # the same images in a moved or copied (mtime-keeping) folder keep their fingerprint
    images = fingerprint("images", "\n".join(line[prefix:] for line in stat_lines))
    return Split(
        ids, labels, groups, data_fingerprint, name=name, paths=paths, missing=missing if missing.any() else None, images_fingerprint=images,
        max_pixels=cfg.data.max_image_pixels,
    )


def _one_row_per_id(train: pd.DataFrame, id_column: str, label_columns: list[str], path: Path, cfg: CompetitionConfig) -> pd.DataFrame:
    """data.repeated_ids = "same_label": rows repeating an id (one per detection box) read as one when their labels agree."""
    repeated = train[id_column].duplicated(keep=False)
    if not repeated.any():
        return train
    columns = [c for c in label_columns if c in train.columns]
    disagree = train[repeated].groupby(id_column)[columns].nunique(dropna=False).gt(1).any(axis=1)
    if disagree.any():
        first = disagree[disagree].index[0]
        raise KitError(f"{path}: id '{first}' repeats with different labels ({', '.join(columns)}); each id needs one label: fix the file")
    return train.drop_duplicates(id_column, keep="first").reset_index(drop=True)


def _train_table(cfg: CompetitionConfig, data_dir: Path, test_ids: np.ndarray) -> tuple[pd.DataFrame, Path | None, bytes, np.ndarray | None]:
    """(train rows as id + labels [+ patient], the CSV or None, the bytes the fingerprint reads, paths from class folders or None)."""
    d = cfg.data
    if d.train_csv is None:  # class folders: the folder name is the label
        found = class_folder_images(data_dir, d.train_images, str(cfg.source_file))
        frame = pd.DataFrame({d.id_column: found.ids, CLASS_FOLDER: found.labels})
        return frame, None, found.listing.encode(), found.paths
    train_path = data_dir / d.train_csv
    id_column = d.train_id_column or d.id_column
    train = read_layout_csv(train_path, id_column, cfg, "train_id_column" if d.train_id_column else "train_csv")
    if d.train_id_column:
        train = train.drop(columns=[c for c in train.columns if c == d.id_column and c != id_column]).rename(columns={id_column: d.id_column})
    if d.drop_test_ids:
        train = train[~train[d.id_column].isin(set(test_ids.tolist()))].reset_index(drop=True)
    if d.repeated_ids == "same_label":
        train = _one_row_per_id(train, d.id_column, [d.label_column] if d.label_column else list(d.class_columns or []), train_path, cfg)
    return train, train_path, train_path.read_bytes(), None


def open_kaggle(cfg: CompetitionConfig, data_dir: Path) -> DataSource:
    """The train CSV's (or class folders') labels and groups, the test ids, and both splits' image files, all checked."""
    d = cfg.data
    test_path = data_dir / d.test_csv
    test = read_layout_csv(test_path, d.id_column, cfg, "test_csv")
    test_ids = test[d.id_column].astype(str).to_numpy(dtype=str)
    _check_unique_ids(test_ids, test_path)

    train, train_path, listing, train_paths = _train_table(cfg, data_dir, test_ids)
    train_ids = train[d.id_column].astype(str).to_numpy(dtype=str)
    _check_unique_ids(train_ids, train_path or data_dir)
    patient = d.patient_column if d.patient_column and d.patient_column in train.columns else None
    labels, classes = _train_labels(cfg, data_dir, train, patient)
    groups = _patient_groups(train, patient)

    train_split = _image_split(cfg, data_dir, "train", train_ids, listing, labels, groups=groups, paths=train_paths)
    test_split = _image_split(cfg, data_dir, "test", test_ids, test_path.read_bytes(), None, groups=None)
    return DataSource(classes, cfg.task, train_split, test_split, synthetic=(data_dir / "SYNTHETIC").exists())


def kaggle_test_labels(cfg: CompetitionConfig) -> pd.DataFrame | None:
    """solution.csv (the synthetic benchmark's test labels) as id + class columns, or None when absent."""
    if not cfg.data.solution_csv:
        return None
    path = Path(cfg.data.dir) / cfg.data.solution_csv
    if not path.is_file():
        return None
    frame = read_layout_csv(path, cfg.data.id_column, cfg, "solution_csv")
    indicator = [c for c in frame.columns if c != cfg.data.id_column and frame[c].dtype.kind in "iub"]
    if indicator and frame[indicator].isin([0, 1]).all().all():  # one-hot columns as uint8 (n, C) indicators
        frame[indicator] = frame[indicator].astype(np.uint8)
    return frame
