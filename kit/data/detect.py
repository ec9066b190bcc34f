"""What a competition folder holds, read from its own files (`kit init`), with the reason for each decision.

The id column and the classes (and their order) come from sample_submission.csv; the task and the
label format from train.csv (one-hot class columns, one label column of names or integers, or one
column of labels joined by a separator with a "none" value); a patient column by its name and its
repeated values; the image paths by probing the usual folders and extensions. Whatever cannot be
decided from the files stops with one KitError line naming the key to set: a wrong guess would only
fail later, or worse, train on the wrong labels.
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
from kit.data.kaggle_csv import label_order
from kit.errors import KitError
from kit.files import read_text

SAMPLE_NAMES = ("sample_submission.csv", "sampleSubmission.csv", "sample_submission_stage_1.csv")
TRAIN_NAMES = ("train.csv", "train_labels.csv", "Data_Entry_2017.csv", "labels.csv")
LABEL_NAMES = ("label", "labels", "class", "classes", "target", "diagnosis", "category", "finding labels", "finding_labels")
GROUP_NAME = re.compile(r"^(patient|subject|participant|group)(id|no|num|number|code|key)?$")  # letters of the name only
SEPARATORS = ("|", ";", ",", " ")
IMAGE_FOLDERS = ("train", "test", "images", "train_images", "test_images", "")
EXTENSIONS = ("", ".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
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

    def found(self, key: str, value: Any, why: str) -> None:
        self.findings.append(Finding(key, value if isinstance(value, str) else repr(value), why))


def detect_layout(data_dir: Path) -> Layout:
    """Read `data_dir`'s CSVs and image folders; KitError (one line naming the key to set) when undecidable."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise KitError(f"{data_dir}: no such folder; give `kit init` the folder holding train.csv and sample_submission.csv")
    layout = Layout()
    sample_name, train_name = _csv_files(data_dir, layout)
    sample = _read_strings(data_dir / sample_name)
    train = _read_strings(data_dir / train_name)
    id_column = _id_column(sample, train, sample_name, train_name, layout)
    used = _labels(sample, train, id_column, train_name, layout)
    group = _group_column(train, [id_column, *used], train_name, layout)
    left_out = [c for c in train.columns if c not in (id_column, group, *used)]
    if left_out:
        layout.found("(left out)", ", ".join(left_out), f"columns of {train_name} that are neither id, class nor patient: not used")
    for split, ids, key in (("train", train[id_column], "train_images"), ("test", sample[id_column], "test_images")):
        layout.data[key] = _image_pattern(data_dir, ids.tolist(), split, key, layout)
    return layout


def _csv_files(data_dir: Path, layout: Layout) -> tuple[str, str]:
    """(sample_submission, train) file names: the usual names first, else the only CSV that fits."""
    csvs = sorted(p.name for p in data_dir.glob("*.csv"))
    if not csvs:
        raise KitError(f"{data_dir}: no CSV files; give `kit init` the folder holding train.csv and sample_submission.csv")
    samples = [n for n in SAMPLE_NAMES if n in csvs] or [n for n in csvs if "sample" in n.lower()]
    if len(samples) != 1:
        found = f"several ({', '.join(samples)})" if samples else "none"
        raise KitError(f"{data_dir}: sample submission: {found} found; set data.sample_submission (kit init reads the ids and classes from it)")
    trains = [n for n in TRAIN_NAMES if n in csvs][:1]
    if not trains:
        others = [n for n in csvs if n != samples[0] and not n.lower().startswith(("test", "solution"))]
        trains = [n for n in others if "train" in n.lower()] or others
    if len(trains) != 1:
        raise KitError(f"{data_dir}: which CSV holds the training labels ({first_items(trains) or 'none found'})? set data.train_csv")
    layout.data.update(train_csv=trains[0], test_csv=samples[0], sample_submission=samples[0])
    layout.found("sample_submission", samples[0], "the submission format and the test ids, in submission order")
    layout.found("train_csv", trains[0], "the training labels")
    return samples[0], trains[0]


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


def _id_column(sample: pd.DataFrame, train: pd.DataFrame, sample_name: str, train_name: str, layout: Layout) -> str:
    """The sample's column that train.csv shares and whose values are unique in both."""
    shared = [c for c in sample.columns if c in train.columns and _is_key(sample[c]) and _is_key(train[c])]
    if len(shared) > 1:
        raise KitError(f"{sample_name} and {train_name}: several plausible id columns ({', '.join(shared)}); set data.id_column")
    if not shared:
        first = sample.columns[0]
        where = f"{train_name} has no column '{first}'" if first not in train.columns else f"its values repeat in {train_name}"
        raise KitError(
            f"{sample_name}: no id column shared with {train_name} ({where}); set data.id_column, "
            "and give both files the same id column name (the kit reads one data.id_column from each)"
        )
    layout.data["id_column"] = shared[0]
    layout.found("id_column", shared[0], f"in both CSVs, unique in each ({len(train)} train, {len(sample)} test ids)")
    return shared[0]


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


def _image_pattern(data_dir: Path, ids: list[str], split: str, key: str, layout: Layout) -> str:
    """The one (folder, extension) that finds every id's image; KitError naming `key` otherwise."""
    if ids and "/" in ids[0] and all((data_dir / i).is_file() for i in ids):  # ids that are paths inside the folder
        layout.found(key, "{id}", f"every {split} id is the path of its image file")
        return "{id}"
    best: tuple[int, str] = (0, "")
    full = []
    for folder in _image_folders(data_dir):
        names = set(os.listdir(data_dir / folder)) if folder else set(os.listdir(data_dir))
        if any(f"{i}.dcm" in names or i.lower().endswith(".dcm") and i in names for i in ids[:50]):
            raise KitError(f"{data_dir / folder}: the {split} images are DICOM (.dcm), which the kit does not read; convert them to PNG and run `kit init` again")
        for ext in EXTENSIONS:
            found = sum(f"{i}{ext}" in names for i in ids)
            pattern = f"{folder}/{{id}}{ext}" if folder else f"{{id}}{ext}"
            if found == len(ids):
                full.append(pattern)
            best = max(best, (found, pattern))
    if len(full) > 1:
        raise KitError(f"{data_dir}: the {split} images are in several places ({', '.join(full)}); set data.{key}")
    if not full:
        where = f"the best pattern '{best[1]}' finds {best[0]} of {len(ids)}" if best[0] else f"none found for ids like {first_items(ids, 2)}"
        raise KitError(
            f"{data_dir}: {split} images not found in {'/, '.join(f for f in IMAGE_FOLDERS if f)}/ or one level below, as .png/.jpg/.jpeg "
            f"or the id as file name ({where}); set data.{key}"
        )
    layout.found(key, full[0], f"all {len(ids)} {split} ids have a file there")
    return full[0]


def _image_folders(data_dir: Path) -> list[str]:
    """The usual image folders that exist (and the data folder itself), each with its subfolders (one level)."""
    folders: list[str] = []
    for name in IMAGE_FOLDERS:
        top = data_dir / name
        if not top.is_dir():
            continue
        with os.scandir(top) as entries:  # the entry's own type: no stat per image file
            subs = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
        for folder in (name, *(f"{name}/{s}" if name else s for s in subs)):
            if folder not in folders:
                folders.append(folder)
    return folders
