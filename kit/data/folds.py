"""Cross-validation folds (docs/files.md): `folds/folds.csv` with `id,fold` for every training image.

Stratified by class so that a class with five images has one in each of five folds (its
metric term is otherwise undefined on some fold), grouped by patient so a patient's images
never sit on both sides of a split (they share anatomy: a grouped leak inflates OOF scores),
and seeded so the same seed always gives the same file. `kit folds` refuses (and names the
largest K that works) when some class cannot be in every held-out fold, since calibration
could not score that class there.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from kit.artifacts import read_folds
from kit.config import CompetitionConfig
from kit.data.sources import open_source
from kit.errors import KitError
from kit.files import atomic_write


def assign_folds(labels: np.ndarray, groups: np.ndarray | None, n_folds: int, seed: int, task: str) -> np.ndarray:
    """Fold index per row: stratified (iteratively for multi-label), grouped when groups are given."""
    n = len(labels)
    n_units = n if groups is None else len(np.unique(groups))
    if n_units < n_folds:
        unit = "patients" if groups is not None else "images"
        raise KitError(f"only {n_units} {unit} for {n_folds} folds; lower folds.n_folds")
    fold = np.full(n, -1, dtype=np.int64)
    with warnings.catch_warnings():  # small classes are reported by name by make_folds instead
        warnings.simplefilter("ignore", UserWarning)
        if task == "multi-class":
            from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

            y = labels.argmax(axis=1)
            if groups is None:
                splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
                splits = splitter.split(np.zeros(n), y)
            else:
                splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
                splits = splitter.split(np.zeros(n), y, groups)
            for k, (_, held_out) in enumerate(splits):
                fold[held_out] = k
        else:
            from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

            splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            if groups is None:
                for k, (_, held_out) in enumerate(splitter.split(np.zeros(n), labels)):
                    fold[held_out] = k
            else:  # stratify patients (their labels OR-ed), then give each image its patient's fold
                unique, inverse = np.unique(groups, return_inverse=True)
                patient_labels = np.zeros((len(unique), labels.shape[1]), dtype=np.uint8)
                np.maximum.at(patient_labels, inverse, labels)
                patient_fold = np.full(len(unique), -1, dtype=np.int64)
                for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(unique)), patient_labels)):
                    patient_fold[held_out] = k
                fold = patient_fold[inverse]
    assert (fold >= 0).all()
    return fold


def fold_class_counts(labels: np.ndarray, fold: np.ndarray, n_folds: int) -> np.ndarray:
    """(n_folds, C) images of each class in each fold."""
    return np.stack([labels[fold == k].sum(axis=0) for k in range(n_folds)])


def max_folds(labels: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """(C,) the most folds each class can be in: its images, or its patients when grouped."""
    if groups is None:
        return labels.sum(axis=0).astype(np.int64)
    _, inverse = np.unique(groups, return_inverse=True)
    per_patient = np.zeros((int(inverse.max()) + 1, labels.shape[1]), dtype=np.uint8)
    np.maximum.at(per_patient, inverse, labels)
    return per_patient.sum(axis=0).astype(np.int64)


def check_every_class_fits(labels: np.ndarray, groups: np.ndarray | None, classes: list[str], cfg: CompetitionConfig) -> None:
    """KitError naming the smallest class and the largest valid K when a class cannot be in every fold."""
    n_folds = cfg.folds.n_folds
    room = max_folds(labels, groups)
    c = int(room.argmin())
    if room[c] >= n_folds:
        return
    count = int(labels[:, c].sum())
    size = f"{count} image{'s' if count != 1 else ''}" + (f" of {int(room[c])} patients" if groups is not None else "")
    if room[c] < 2:
        fix = "no cross-validation can hold it out in every fold: add images of it, or drop the class"
    else:
        fix = f"set folds.n_folds = {int(room[c])}, the largest K that puts every class in every fold"
    raise KitError(
        f"{cfg.source_file}: folds.n_folds = {n_folds} but class '{classes[c]}' has {size}; it would be absent from "
        f"some held-out folds, where its metric term is undefined: {fix}"
    )


def make_folds(cfg: CompetitionConfig, console: Console | None = None) -> pd.DataFrame:
    """Write cfg.folds.path (id,fold) and print per-fold class counts; refuse folds where a class is absent."""
    console = console or Console()
    source = open_source(cfg)
    train = source.train
    n_folds = cfg.folds.n_folds
    check_every_class_fits(train.labels, train.groups, source.classes, cfg)
    fold = assign_folds(train.labels, train.groups, n_folds, cfg.folds.seed, source.task)
    counts = fold_class_counts(train.labels, fold, n_folds)
    absent = np.argwhere(counts == 0)
    if len(absent):
        k, c = (int(v) for v in absent[0])
        raise KitError(
            f"{cfg.source_file}: with folds.seed = {cfg.folds.seed} the split leaves class '{source.classes[c]}' out of fold {k} "
            f"(its patients could not be spread over {n_folds} folds); try another folds.seed"
            + (f" or folds.n_folds = {n_folds - 1}" if n_folds > 2 else "")
        )
    frame = pd.DataFrame({"id": train.ids, "fold": fold})
    atomic_write(cfg.folds.path, lambda f: f.write(frame.to_csv(index=False).encode()))

    grouped = f"grouped by '{cfg.data.patient_column}'" if train.groups is not None else "not grouped (no patient column)"
    table = Table(title=f"{n_folds} folds, {len(frame)} images, seed {cfg.folds.seed}, {grouped}")
    table.add_column("class")
    for k in range(n_folds):
        table.add_column(f"fold {k}", justify="right")
    table.add_column("total", justify="right")
    for c, name in enumerate(source.classes):
        table.add_row(name, *(str(int(v)) for v in counts[:, c]), str(int(counts[:, c].sum())))
    table.add_row("[bold]images", *(str(int((fold == k).sum())) for k in range(n_folds)), str(len(frame)))
    console.print(table)
    console.print(f"wrote {cfg.folds.path}")
    return frame


def load_fold_assignment(cfg: CompetitionConfig, ids: np.ndarray) -> np.ndarray:
    """Fold per id from folds.csv; KitError when the ids are not exactly those of folds.csv."""
    path = cfg.folds.path
    folds = read_folds(path)
    mapping = dict(zip(folds["id"].astype(str), folds["fold"].astype(int)))
    ids = [str(i) for i in ids]
    missing = [i for i in ids if i not in mapping]
    if missing or len(mapping) != len(ids):
        extra = len(mapping) - (len(ids) - len(missing))
        raise KitError(
            f"{path}: ids do not match the training data ({len(missing)} not in folds.csv, e.g. {missing[:3]}; "
            f"{extra} in folds.csv but not in the data); run `kit folds` again"
        )
    fold = np.array([mapping[i] for i in ids], dtype=np.int64)
    if (fold < 0).any() or (fold >= cfg.folds.n_folds).any():
        raise KitError(f"{path}: fold values outside 0..{cfg.folds.n_folds - 1}; folds.n_folds changed: run `kit folds` again")
    return fold
