"""What a competition folder holds, read from its own files (`kit init`), with the reason for each decision.

The id column and the classes (and their order) come from the sample submission; the labels from the one
CSV whose ids look like the sample's and which holds its labels (one-hot class columns, one label column
of names or integers, or labels joined by a separator with a "none" value), or else from class folders
named as the sample's classes; a patient column by its name and its repeated values; the image paths by
probing every folder up to three down for the ids' files (any image suffix, any case, DICOM), one folder
or several that hold each id once. Whatever cannot be decided from the files stops with one KitError line
naming the key to set: a wrong guess would only fail later, or worse, train on the wrong labels.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kit.data.common import first_items
from kit.data.dicom import dicom_metadata
from kit.data.image_files import IMAGE_SUFFIXES, concrete_folders, is_image_name, listed_names
from kit.data.kaggle_csv import label_order
from kit.errors import KitError
from kit.files import read_text

SAMPLE_NAMES = ("sample_submission.csv", "sampleSubmission.csv", "sample_submission_stage_1.csv")
TRAIN_NAMES = ("train.csv", "train_labels.csv", "Data_Entry_2017.csv", "labels.csv")
LABEL_NAMES = ("label", "labels", "class", "classes", "target", "diagnosis", "category", "finding labels", "finding_labels")
GROUP_NAME = re.compile(r"^(patient|subject|participant|group)(id|no|num|number|code|key)?$")  # letters of the name only
SEPARATORS = ("|", ";", ",", " ")
MAX_DEPTH = 3  # image folders are probed this many folders down from the data folder
ONE_HOT_VALUES = {"0", "1", "0.0", "1.0"}
NONE_NAME = re.compile(r"^(no ?findings?|none|normal|healthy|negative|no ?labels?|nothing|background)$")  # lower case, "_" as space


@dataclass(frozen=True)
class Finding:
    """One row of `kit init`'s table: a config key, the value found, and why."""

    key: str
    value: str
    why: str


@dataclass
class Layout:
    """The detected layout: the [data] keys to write, the task, the classes, and the reasons."""

    data: dict[str, Any] = field(default_factory=dict)
    task: str = "multi-class"
    classes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # columns and DICOM metadata not used for training

    def found(self, key: str, value: Any, why: str) -> None:
        self.findings.append(Finding(key, value if isinstance(value, str) else repr(value), why))


@dataclass(frozen=True, eq=False)
class _LabelFile:
    """A CSV that holds the training labels: its name, its rows, and its id column."""

    name: str
    frame: pd.DataFrame
    id_column: str  # its own name for the ids (the sample's may differ)


def detect_layout(data_dir: Path) -> Layout:
    """Read `data_dir`'s CSVs and image folders; KitError (one line naming the key to set) when undecidable."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise KitError(f"{data_dir}: no such folder; give `kit init` the folder holding train.csv and sample_submission.csv")
    layout = Layout()
    folders = _Folders(data_dir)
    sample_name = _sample_file(data_dir, layout)
    sample = _read_strings(data_dir / sample_name)
    label_file = _label_file(data_dir, sample, sample_name, layout)
    if label_file is None:
        _class_folder_layout(folders, sample, sample_name, layout)
    else:
        _csv_layout(data_dir, folders, sample, sample_name, label_file, layout)
    layout.data["test_images"] = _image_pattern(folders, sample[layout.data["id_column"]].tolist(), "test", "test_images", layout)
    for key in ("train_images", "test_images"):
        _dicom_left_out(data_dir, layout.data[key], layout)
    if layout.left_out:
        layout.found("(left out)", ", ".join(layout.left_out), "neither id, class nor patient: not used")
    return layout


def _csv_layout(data_dir: Path, folders: _Folders, sample: pd.DataFrame, sample_name: str, label_file: _LabelFile, layout: Layout) -> None:
    """Labels from a CSV: its id column, label columns, patient column and the train images' pattern."""
    train_name, train = label_file.name, label_file.frame
    layout.data.update(train_csv=train_name, test_csv=sample_name, sample_submission=sample_name)
    layout.found("sample_submission", sample_name, "the submission format and the test ids, in submission order")
    layout.found("train_csv", train_name, "the training labels")
    id_column = _id_column(sample, train, label_file.id_column, sample_name, train_name, layout)
    is_test = train[label_file.id_column].isin(set(sample[id_column]))
    if is_test.any():  # a CSV of every image (NIH's Data_Entry_2017.csv): the test rows are not training rows
        train = train[~is_test].reset_index(drop=True)
        layout.data["drop_test_ids"] = True
        layout.found("drop_test_ids", "true", f"{int(is_test.sum())} rows of {train_name} are the sample's test ids: left out of training")
    repeated = train[label_file.id_column].duplicated()
    first_rows = train[~repeated].reset_index(drop=True)
    trial = Layout()
    used = _labels(_renamed_ids(sample, id_column, label_file.id_column), first_rows, label_file.id_column, train_name, trial)
    if repeated.any():
        agree = ~first_rows.set_index(label_file.id_column)[used].reindex(train[label_file.id_column]).reset_index(drop=True).ne(
            train[used].reset_index(drop=True)).any(axis=1)
        if not agree.all():
            bad = train[label_file.id_column][~agree].iloc[0]
            raise KitError(f"{train_name}: id '{bad}' repeats with different labels; set data.repeated_ids only when each id has one label")
        layout.data["repeated_ids"] = "same_label"
        layout.found("repeated_ids", "same_label", f"{int(repeated.sum())} rows repeat an id (one per box) with the same label: read once")
    layout.findings += trial.findings
    layout.data.update(trial.data)
    layout.task, layout.classes = trial.task, trial.classes
    group = _group_column(first_rows, [label_file.id_column, *used], train_name, layout)
    _left_out_columns(first_rows, [label_file.id_column, id_column, group, *used], used, train_name, layout)
    _test_metadata(data_dir, sample, sample_name, id_column, layout)
    layout.data["train_images"] = _image_pattern(folders, first_rows[label_file.id_column].tolist(), "train", "train_images", layout)


def _sample_file(data_dir: Path, layout: Layout) -> str:
    """The sample submission's file name: the usual names first, else the only CSV named like one."""
    csvs = sorted(p.name for p in data_dir.glob("*.csv"))
    if not csvs:
        raise KitError(f"{data_dir}: no CSV files; give `kit init` the folder holding train.csv and sample_submission.csv")
    samples = [n for n in SAMPLE_NAMES if n in csvs] or [n for n in csvs if "sample" in n.lower()]
    if len(samples) != 1:
        found = f"several ({', '.join(samples)})" if samples else "none"
        raise KitError(f"{data_dir}: sample submission: {found} found; set data.sample_submission (kit init reads the ids and classes from it)")
    return samples[0]


def _label_file(data_dir: Path, sample: pd.DataFrame, sample_name: str, layout: Layout) -> _LabelFile | None:
    """The one CSV whose id column matches the sample's ids and which holds the sample's labels; None when no
    CSV does (class folders may); KitError naming data.train_csv when two could."""
    csvs = sorted(p.name for p in data_dir.glob("*.csv"))
    names = [n for n in csvs if n != sample_name and not n.lower().startswith(("test", "solution", "sample"))]
    candidates = []
    for name in sorted(names, key=lambda n: (TRAIN_NAMES.index(n) if n in TRAIN_NAMES else len(TRAIN_NAMES), n)):
        frame = _read_strings(data_dir / name)
        column = _matching_id_column(sample, frame, sample_name, name)
        if column is not None:
            candidates.append(_LabelFile(name, frame, column))
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    holding = []
    for candidate in candidates:
        try:
            first_rows = candidate.frame.drop_duplicates(candidate.id_column)
            sample_id = candidate.id_column if candidate.id_column in sample.columns else sample.columns[0]
            _labels(_renamed_ids(sample, sample_id, candidate.id_column), first_rows, candidate.id_column, candidate.name, Layout())
        except KitError:
            continue
        holding.append(candidate)
    if len(holding) > 1:  # a CSV of some images only (one row per box: BBox_List_2017.csv) annotates; it does not label
        ids = {c.name: set(c.frame[c.id_column]) for c in holding}
        widest = [c for c in holding if not any(ids[c.name] < ids[o.name] for o in holding)]
        for c in holding:
            if c not in widest:
                layout.found("(not the labels)", c.name, f"its ids are a part of another CSV's ({len(ids[c.name])} ids): not used")
        holding = widest
    if len(holding) > 1:
        named = [c for c in holding if set(sample.columns[1:]) <= set(c.frame.columns)]  # the sample's own label column names
        holding = named if len(named) == 1 else holding
    if len(holding) > 1:
        raise KitError(f"{data_dir}: several CSVs could hold the training labels ({', '.join(c.name for c in holding)}); set data.train_csv")
    return holding[0] if holding else candidates[0]  # none holds them: the first one's own error says why


def _renamed_ids(sample: pd.DataFrame, sample_id: str, train_id: str) -> pd.DataFrame:
    """The sample with its id column under the train CSV's name (the label rules compare the two files' columns)."""
    return sample if sample_id == train_id else sample.drop(columns=[train_id], errors="ignore").rename(columns={sample_id: train_id})


def _id_kind(value: str) -> tuple:
    """What an id looks like: all digits, or its length and the kinds of characters in it (hex, ISIC_0012345, x.png)."""
    if value.isdigit():
        return ("digits",)
    kinds = frozenset("9" if c.isdigit() else "a" if c.islower() else "A" if c.isupper() else c for c in value)
    return (len(value), kinds)


def _matching_id_column(sample: pd.DataFrame, frame: pd.DataFrame, sample_name: str, name: str) -> str | None:
    """`frame`'s id column: the sample's id column name when `frame` has it, else the one column whose values
    look like the sample's ids (the same kind: length and characters); None when no column does."""
    keys = [c for c in sample.columns if _is_key(sample[c])]
    shared = [c for c in keys if c in frame.columns and frame[c].notna().all()]
    if shared:
        unique = [c for c in shared if frame[c].is_unique]
        return (unique or shared)[0]
    if not keys:
        return None
    kinds = {_id_kind(v) for v in sample[keys[0]].head(500)}
    matching = []
    for column in frame.columns:
        values = frame[column].dropna().head(500)
        if len(values) and values.nunique() > 1 and sum(_id_kind(v) in kinds for v in values) >= 0.9 * len(values):
            matching.append(column)
    if len(matching) > 1:
        raise KitError(f"{name}: several columns look like the ids of {sample_name} ({', '.join(matching)}); set data.train_id_column")
    return matching[0] if matching else None


def _read_strings(path: Path) -> pd.DataFrame:
    """A CSV with every value as written (text); only empty fields are missing."""
    text = read_text(path, "check the file")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise KitError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from None
    if frame.empty:
        raise KitError(f"{path}: has no rows; restore it from the competition download")
    return frame


def _is_key(values: pd.Series) -> bool:
    return bool(values.notna().all() and values.is_unique)


def _id_column(sample: pd.DataFrame, train: pd.DataFrame, train_id: str, sample_name: str, train_name: str, layout: Layout) -> str:
    """The sample's id column; the train CSV's own name for it too when the two differ (data.train_id_column)."""
    shared = [c for c in sample.columns if c in train.columns and _is_key(sample[c]) and _is_key(train[c])]
    if len(shared) > 1:
        raise KitError(f"{sample_name} and {train_name}: several plausible id columns ({', '.join(shared)}); set data.id_column")
    id_column = train_id if train_id in sample.columns else next(c for c in sample.columns if _is_key(sample[c]))
    layout.data["id_column"] = id_column
    n_train = train[train_id].nunique()
    if id_column == train_id:
        layout.found("id_column", id_column, f"in both CSVs, unique in each ({n_train} train, {len(sample)} test ids)")
    else:
        layout.data["train_id_column"] = train_id
        layout.found("id_column", id_column, f"the sample's ids ({len(sample)} test ids)")
        layout.found("train_id_column", train_id, f"{train_name}'s column of ids of the same kind ({n_train} train ids)")
    return id_column


def _labels(sample: pd.DataFrame, train: pd.DataFrame, id_column: str, train_name: str, layout: Layout) -> list[str]:
    """Classes, task and label keys; returns the train.csv columns that hold labels."""
    answers = [c for c in sample.columns if c != id_column]
    if not answers:
        raise KitError(f"sample submission: no column besides '{id_column}'; set data.class_columns or data.label_column")
    if len(answers) == 1:
        return _label_column_sample(answers[0], train, id_column, train_name, layout)
    layout.classes = answers
    layout.found("classes", f"{len(answers)}: {first_items(answers, 6)}", "the sample's columns, in its order (one-hot submission)")
    present = [c for c in answers if c in train.columns]
    if present and len(present) < len(answers):
        absent = [c for c in answers if c not in train.columns]
        raise KitError(f"{train_name}: classes of the sample submission absent from it: {first_items(absent)}; set data.class_columns")
    if present:
        return _one_hot_train(train, answers, train_name, layout)
    return _joined_train(train, answers, id_column, train_name, layout)


def _one_hot_train(train: pd.DataFrame, classes: list[str], train_name: str, layout: Layout) -> list[str]:
    values = train[classes]
    bad = [c for c in classes if not values[c].isin(ONE_HOT_VALUES).all()]
    if bad:
        raise KitError(f"{train_name}: class column '{bad[0]}' holds values other than 0/1; set data.class_columns to the one-hot columns")
    active = values.astype(float).sum(axis=1)
    for column in (c for c in train.columns if c not in classes and train[c].isin(ONE_HOT_VALUES).all()):
        if ((active + train[column].astype(float)) == 1).all():  # it completes the one-hot rows: a class the sample lacks
            raise KitError(f"{train_name}: column '{column}' is one-hot with the sample's classes but the sample has no such column; set data.class_columns")
    layout.task = "multi-class" if (active == 1).all() else "multi-label"
    why = "every row has exactly one 1" if layout.task == "multi-class" else f"{int((active != 1).sum())} rows have no or several 1s"
    layout.data["class_columns"] = classes
    layout.found("class_columns", f"{len(classes)} one-hot columns", f"{train_name} has every class of the sample as a 0/1 column")
    layout.found("task", layout.task, why)
    return list(classes)


def _joined_train(train: pd.DataFrame, classes: list[str], id_column: str, train_name: str, layout: Layout) -> list[str]:
    """train.csv has no class columns: find the one column whose cells are the sample's classes, maybe joined."""
    fits = []
    for column in (c for c in train.columns if c != id_column):
        reading = _read_as_labels(train[column].fillna("").tolist(), set(classes))
        if reading is not None:
            fits.append((column, *reading))
    if not fits:
        raise KitError(
            f"{train_name}: neither class columns nor a column of the sample's classes ({first_items(classes, 4)}); "
            "set data.label_column (and data.label_separator) or data.class_columns"
        )
    if len(fits) > 1:
        raise KitError(f"{train_name}: several columns hold the sample's classes ({', '.join(f[0] for f in fits)}); set data.label_column")
    column, separator, none_label, task = fits[0]
    if none_label is not None and not NONE_NAME.match(none_label.lower().replace("_", " ")):
        raise KitError(
            f"{train_name}: '{column}' has the value {none_label!r}, which is not a column of the sample submission: "
            f"set data.none_label = {none_label!r} if it means no class (else the sample lacks a class)"
        )
    layout.task = task
    layout.data["label_column"] = column
    layout.found("label_column", column, "its cells are the sample's class names")
    if separator is not None:
        layout.data["label_separator"] = separator
        layout.found("label_separator", separator, "cells hold several classes joined by it")
    if none_label is not None:
        layout.data["none_label"] = none_label
        layout.found("none_label", none_label, "not a class of the sample, never joined with one: a row of no class")
    layout.found("task", task, "some rows have several or no classes" if task == "multi-label" else "every row has exactly one class")
    return [column]


def _read_as_labels(cells: list[str], classes: set[str]) -> tuple[str | None, str | None, str] | None:
    """(separator, none value, task) when every cell is classes joined by one separator, or one value
    outside the classes standing alone (the "none" value); None when the column is not that."""
    for separator in SEPARATORS:
        split = [[p.strip() for p in c.split(separator) if p.strip()] for c in cells]
        tokens = {t for parts in split for t in parts}
        extra = tokens - classes
        if len(extra) > 1 or not tokens & classes:
            continue
        none_label = extra.pop() if extra else None
        if none_label is not None and (
            any(none_label in parts and len(parts) > 1 for parts in split) or set(re.split(r"[|;,\s]+", none_label)) & classes
        ):
            continue  # a "none" value stands alone and is not classes joined some other way
        joined = any(len(parts) > 1 for parts in split)
        n_classes = [len([p for p in parts if p != none_label]) for parts in split]
        task = "multi-class" if all(n == 1 for n in n_classes) else "multi-label"
        return (separator if joined else None), none_label, task
    return None


def _label_column_sample(answer: str, train: pd.DataFrame, id_column: str, train_name: str, layout: Layout) -> list[str]:
    """A sample with one label column: train.csv's column of the same name (or a usual label name) gives the
    classes: one per row, or several joined by a separator (multi-label, written back joined the same way)."""
    others = [c for c in train.columns if c != id_column and not _patient_named(c)]
    named = [c for c in others if c == answer] or [c for c in others if c.strip().lower() in LABEL_NAMES] or others
    if len(named) != 1:
        raise KitError(
            f"{train_name}: which column holds the labels ({first_items(named) if named else 'none besides the id'}; "
            f"none is named {answer!r} or label/class/target)? set data.label_column"
        )
    column = named[0]
    values = train[column]
    if values.isna().any():
        raise KitError(f"{train_name}: {int(values.isna().sum())} rows have an empty '{column}'; fill them, or set data.label_column to another column")
    cells = values.str.strip().tolist()
    separator = _joining_separator(cells)
    tokens = {t.strip() for c in cells for t in (c.split(separator) if separator else [c]) if t.strip()}
    classes = label_order(tokens)
    integers = all(c.lstrip("-").isdigit() for c in classes)
    layout.task, layout.classes = ("multi-label" if separator else "multi-class"), classes
    layout.data["label_column"] = column
    layout.found("label_column", column, f"the sample has one label column '{answer}'")
    if separator:
        layout.data["label_separator"] = separator
        layout.found("label_separator", separator, "cells hold several labels joined by it")
    layout.found("classes", f"{len(classes)}: {first_items(classes, 6)}",
                 f"the distinct {'integers' if integers else 'names'} of '{column}', {'in numeric order' if integers else 'sorted'}")
    layout.found("task", layout.task, "some rows have several labels" if separator else "one label per row")
    return [column]


def _joining_separator(cells: list[str]) -> str | None:
    """The separator that joins several labels in some cells: '|', ';' or ',', or a space when it separates
    integers, or words that combine in more ways than there are words ('haze primary', 'clear primary', ...);
    a space inside class names ('Pleural Thickening', 'No Finding') is part of the name."""
    for separator in SEPARATORS[:-1]:
        if any(len([p for p in c.split(separator) if p.strip()]) > 1 for c in cells):
            return separator
    parts = [c.split() for c in cells]
    tokens = {t for p in parts for t in p}
    if any(len(p) > 1 for p in parts) and (all(t.lstrip("-").isdigit() for t in tokens) or len(set(cells)) > len(tokens)):
        return " "
    return None


def _patient_named(column: str) -> bool:
    return bool(GROUP_NAME.match(re.sub(r"[^a-z]", "", column.lower())))


def _group_column(train: pd.DataFrame, used: list[str], train_name: str, layout: Layout) -> str | None:
    """The patient column: named like one (patient, subject, ...) and with repeated values."""
    named = [c for c in train.columns if c not in used and _patient_named(c)]
    repeated = [c for c in named if train[c].notna().any() and not train[c].dropna().is_unique]
    if len(repeated) > 1:
        raise KitError(f"{train_name}: several patient-like columns ({', '.join(repeated)}); set data.patient_column")
    if not repeated:
        why = f"'{named[0]}' never repeats" if named else "no column named patient/subject/participant/group"
        layout.found("patient_column", "(none)", f"{why}: folds are not grouped")
        return None
    column = repeated[0]
    n_groups = train[column].nunique()
    layout.data["patient_column"] = column
    layout.found("patient_column", column, f"its name, and {n_groups} patients for {len(train)} images: folds are grouped by it")
    return column


class _Folders:
    """The data folder's folders up to MAX_DEPTH down, each listed once: {folder: file names}."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.names: dict[str, set[str]] = {}
        self.subfolders: dict[str, list[str]] = {}
        self._walk("", 0)

    def _walk(self, folder: str, depth: int) -> None:
        files, subs = set(), []
        try:
            with os.scandir(self.data_dir / folder if folder else self.data_dir) as entries:  # the entry's own type: no stat per file
                for e in entries:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir():
                        subs.append(e.name)
                    else:
                        files.add(e.name)
        except OSError:
            return
        self.names[folder] = files
        self.subfolders[folder] = sorted(subs)
        if depth < MAX_DEPTH:
            for sub in sorted(subs):
                self._walk(f"{folder}/{sub}" if folder else sub, depth + 1)


def _suffixes(names: set[str]) -> list[str]:
    """The image suffixes (as written: '.png', '.TIF', '.dcm') of the files in a folder, and '' for ids that carry one."""
    found = {os.path.splitext(n)[1] for n in names if is_image_name(n)}
    return ["", *sorted(found)]


def _image_pattern(folders: _Folders, ids: list[str], split: str, key: str, layout: Layout) -> str | list[str]:
    """The one folder and suffix that finds every id's image, else the folders that together hold every id once
    (a glob when one matches exactly them, else their list); KitError naming `key` otherwise."""
    data_dir = folders.data_dir
    if ids and "/" in ids[0] and all((data_dir / i).is_file() for i in ids):  # ids that are paths inside the folder
        layout.found(key, "{id}", f"every {split} id is the path of its image file")
        return "{id}"
    wanted = set(ids)
    full, partial, best = [], [], (0, "")
    for folder, names in folders.names.items():
        for suffix in _suffixes(names):
            hits = wanted & {n[: len(n) - len(suffix)] for n in names if n.endswith(suffix)} if suffix else wanted & names
            pattern = f"{folder}/{{id}}{suffix}" if folder else f"{{id}}{suffix}"
            if len(hits) == len(wanted):
                full.append(pattern)
            elif hits:
                partial.append((pattern, hits))
            best = max(best, (len(hits), pattern))
    if len(full) > 1:
        raise KitError(f"{data_dir}: the {split} images are in several places ({', '.join(full)}); set data.{key}")
    if full:
        layout.found(key, full[0], f"all {len(ids)} {split} ids have a file there")
        return full[0]
    union = set().union(*(hits for _, hits in partial)) if partial else set()
    if partial and union == wanted:
        return _spread_pattern(folders, partial, split, key, layout)
    where = f"the best pattern '{best[1]}' finds {best[0]} of {len(ids)}" if best[0] else f"none found for ids like {first_items(ids, 2)}"
    raise KitError(
        f"{data_dir}: {split} images not found in any folder up to {MAX_DEPTH} down, as {'/'.join(IMAGE_SUFFIXES)} (any case) "
        f"or the id as file name ({where}); set data.{key}"
    )


def _spread_pattern(folders: _Folders, partial: list[tuple[str, set[str]]], split: str, key: str, layout: Layout) -> str | list[str]:
    """Images over several folders that together hold every id: each id in exactly one, else stop naming it."""
    seen: dict[str, str] = {}
    for pattern, hits in partial:
        for i in hits:
            if i in seen:
                raise KitError(
                    f"{folders.data_dir}: {split} id '{i}' has an image in two folders ({seen[i].format(id=i)} and {pattern.format(id=i)}); "
                    f"remove one, or set data.{key}"
                )
            seen[i] = pattern
    patterns = sorted(p for p, _ in partial)
    n = len(seen)
    star = {re.sub(r"\d+", "*", p.rpartition("/")[0]) + "/" + p.rpartition("/")[2] for p in patterns}
    if len(star) == 1:
        glob_pattern = star.pop()
        matched = concrete_folders(folders.data_dir, glob_pattern.rpartition("/")[0])
        if set(patterns) <= {f"{m}/{glob_pattern.rpartition('/')[2]}" for m in matched}:  # other folders it matches hold none of these ids
            layout.found(key, glob_pattern, f"its {len(patterns)} folders together hold each of the {n} {split} ids once")
            return glob_pattern
    layout.found(key, f"{len(patterns)} folders", f"together they hold each of the {n} {split} ids once")
    return patterns


def _class_folder_layout(folders: _Folders, sample: pd.DataFrame, sample_name: str, layout: Layout) -> None:
    """No CSV holds the labels: a folder whose subfolders are the sample's classes (its columns, or names its
    label values are among) holds the training images, one class per folder."""
    id_column = next((c for c in sample.columns if _is_key(sample[c])), sample.columns[0])
    answers = [c for c in sample.columns if c != id_column]
    fits = []
    for folder, subs in folders.subfolders.items():
        classes = [s for s in subs if any(is_image_name(n) for n in folders.names.get(f"{folder}/{s}" if folder else s, ()))]
        if len(classes) < 2:
            continue
        if len(answers) > 1 and set(answers) == set(classes):
            fits.append((folder, classes))
        elif len(answers) == 1 and set(sample[answers[0]].dropna()) <= set(classes):
            fits.append((folder, classes))
    if not fits:
        raise KitError(f"{folders.data_dir}: which CSV holds the training labels (none found: no CSV with ids like those of {sample_name} "
                       "and its labels, no class folders named as its classes)? set data.train_csv")
    if len(fits) > 1:
        raise KitError(f"{folders.data_dir}: several class-folder trees ({', '.join(f or '.' for f, _ in fits)}); set data.train_images")
    folder, classes = fits[0]
    names = {n for c in classes for n in folders.names[f"{folder}/{c}" if folder else c] if is_image_name(n)}
    suffixes = {os.path.splitext(n)[1] for n in names}
    carries = all(is_image_name(i) for i in sample[id_column].head(100))
    file = "{id}" if carries or len(suffixes) != 1 else "{id}" + suffixes.pop()
    pattern = f"{folder}/{{label}}/{file}" if folder else f"{{label}}/{file}"
    layout.data.update(test_csv=sample_name, sample_submission=sample_name, id_column=id_column, train_images=pattern)
    layout.task = "multi-class"
    layout.classes = answers if len(answers) > 1 else label_order(set(classes))
    layout.found("sample_submission", sample_name, "the submission format and the test ids, in submission order")
    layout.found("id_column", id_column, f"the sample's ids ({len(sample)} test ids)")
    layout.found("train_images", pattern, f"no CSV holds the labels; {len(names)} images in {len(classes)} class folders of {folder or '.'}/")
    layout.found("classes", f"{len(classes)}: {first_items(layout.classes, 6)}",
                 "the sample's columns, in its order" if len(answers) > 1 else f"the folder names ({sample_name}'s '{answers[0]}' values are among them)")
    layout.found("task", "multi-class", "one class folder per image")
    layout.found("patient_column", "(none)", "class folders name no patients: folds are not grouped")


def _left_out_columns(train: pd.DataFrame, used: list[str | None], labels: list[str], train_name: str, layout: Layout) -> None:
    """Every other column is left out; a text column that duplicates the label (a function of it, or it a
    function of the column: 'benign_malignant' beside 'target') is named so."""
    key = train[labels].astype(str).agg("|".join, axis=1)
    for column in (c for c in train.columns if c not in used):
        values = train[column]
        text = values.notna().all() and pd.to_numeric(values, errors="coerce").isna().any()
        duplicates = bool(text and values.nunique() > 1 and (
            values.groupby(key).nunique().eq(1).all() or (values.nunique() <= 50 and key.groupby(values).nunique().eq(1).all())
        ))
        layout.left_out.append(f"{column} (duplicates the label)" if duplicates else column)


def _test_metadata(data_dir: Path, sample: pd.DataFrame, sample_name: str, id_column: str, layout: Layout) -> None:
    """A test*.csv beside the sample with the test ids and other columns: metadata, not used (said in the table)."""
    for path in sorted(data_dir.glob("*.csv")):
        if path.name == sample_name or not path.name.lower().startswith("test"):
            continue
        frame = _read_strings(path)
        if id_column in frame.columns and set(frame[id_column]) == set(sample[id_column]):
            columns = [c for c in frame.columns if c != id_column]
            layout.found("(test metadata)", path.name, f"the test ids with {first_items(columns, 4)}: not used (the test ids come from {sample_name})")


def _dicom_left_out(data_dir: Path, value: str | list[str], layout: Layout) -> None:
    """DICOM headers' metadata (view, sex, age, ...) listed like CSV columns, and left out."""
    patterns = [value] if isinstance(value, str) else value
    if not any(p.lower().endswith(".dcm") for p in patterns):
        ids = []
    else:
        folder = concrete_folders(data_dir, patterns[0].rpartition("/")[0].replace("{label}", "*"))
        ids = [str(data_dir / f / n) for f in folder[:1] for n in sorted(listed_names(data_dir / f))[:5] if n.lower().endswith(".dcm")]
    for keyword in dicom_metadata(ids) if ids else []:
        name = f"{keyword} (DICOM)"
        if name not in layout.left_out:
            layout.left_out.append(name)
