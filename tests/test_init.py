"""`kit init`: each detection rule on a small competition folder written here, then `kit folds` at the first try;
what cannot be decided stops with one line naming the key to set."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.config import load_competition
from kit.data import open_source
from tests.conftest import assert_one_line_error, run_kit

FINDINGS = ["Effusion", "Mass", "Nodule", "Pleural Thickening"]


def write_folder(
    root: Path, train: pd.DataFrame, sample: pd.DataFrame, id_column: str,
    train_dir: str = "train", test_dir: str = "test", ext: str = ".png",
) -> Path:
    """A competition folder: the two CSVs and one empty file per image (init and the reader only list and stat them)."""
    data = root / "comp"
    data.mkdir(parents=True)
    train.to_csv(data / "train.csv", index=False)
    sample.to_csv(data / "sample_submission.csv", index=False)
    for folder, ids in ((train_dir, train[id_column]), (test_dir, sample[id_column])):
        (data / folder).mkdir(parents=True, exist_ok=True)
        for i in ids:
            (data / folder / f"{i}{ext}").touch()
    return data


def init_and_folds(tmp_path: Path, data: Path, capsys, *extra) -> tuple[str, object]:
    """`kit init DATA -o cfg.toml` then `kit --config cfg.toml folds`, both in tmp_path; (init's output, config)."""
    config = tmp_path / "cfg.toml"
    code, out, err = run_kit(["init", data, "--output", config, *extra], capsys)
    assert code == 0, err
    code, folds_out, err = run_kit(["--config", config, "folds"], capsys)
    assert code == 0, err
    assert "wrote folds/" in folds_out
    return out, load_competition(config)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the written config's folds/, oof/, runs/ paths are relative


def test_one_hot_layout_with_extra_columns(tmp_path, capsys):
    """One-hot train columns in another order than the sample's, extra columns left out, a patient column found
    by name and repeats, .jpg images in train_images/ and test_images/."""
    rng = np.random.default_rng(0)
    n = 40
    label = np.arange(n) % 4
    train = pd.DataFrame({"image_id": [f"x{i:03d}" for i in range(n)], "Age": rng.integers(20, 80, n), "sex": rng.choice(["M", "F"], n)})
    for k in (3, 1, 0, 2):
        train[FINDINGS[k]] = (label == k).astype(int)
    train["PatientID"] = [f"p{i // 2}" for i in range(n)]
    sample = pd.DataFrame({"image_id": [f"t{i}" for i in range(6)], **{c: 0 for c in FINDINGS}})
    data = write_folder(tmp_path, train, sample, "image_id", "train_images", "test_images", ".jpg")
    out, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.task == "multi-class"
    assert cfg.data.id_column == "image_id"
    assert cfg.data.class_columns == FINDINGS  # the sample's order
    assert cfg.data.patient_column == "PatientID"
    assert (cfg.data.train_images, cfg.data.test_images) == ("train_images/{id}.jpg", "test_images/{id}.jpg")
    assert cfg.folds.n_folds == 5
    assert "Age, sex" in out.replace("\n", " ")
    assert open_source(cfg).classes == FINDINGS


def test_label_column_of_names_and_nested_folders(tmp_path, capsys):
    """One label column of class names (sample with one label column), images one level down, no patient column."""
    classes = ["cat", "dog", "fox"]
    train = pd.DataFrame({"id": [f"a{i}" for i in range(30)], "label": [classes[i % 3] for i in range(30)], "view": "PA"})
    sample = pd.DataFrame({"id": [f"b{i}" for i in range(5)], "label": "cat"})
    data = write_folder(tmp_path, train, sample, "id", "train/train", "test/test")
    out, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.data.label_column == "label" and cfg.data.class_columns is None
    assert cfg.data.patient_column is None
    assert (cfg.data.train_images, cfg.data.test_images) == ("train/train/{id}.png", "test/test/{id}.png")
    assert open_source(cfg).classes == classes
    assert "folds are not grouped" in out.replace("\n", " ")


def test_one_hot_sample_with_a_label_column_and_an_unnamed_label_column(tmp_path, capsys):
    """train.csv's one label column (any name: the only column besides id and patient) and a one-hot sample: multi-class."""
    train = pd.DataFrame({"img": [f"a{i}" for i in range(30)], "level": [FINDINGS[i % 4] for i in range(30)], "patient": [i // 3 for i in range(30)]})
    sample = pd.DataFrame({"img": ["t1"], **{c: 0 for c in FINDINGS}})
    data = write_folder(tmp_path, train, sample, "img")
    _, cfg = init_and_folds(tmp_path, data, capsys)
    assert (cfg.task, cfg.data.label_column, cfg.data.patient_column) == ("multi-class", "level", "patient")
    assert open_source(cfg).train.labels.sum(axis=0).tolist() == [8, 8, 7, 7]
    label_sample = pd.DataFrame({"img": ["t1"], "diagnosis": FINDINGS[0]})
    label_sample.to_csv(data / "sample_submission.csv", index=False)
    code, _, err = run_kit(["init", data, "--output", tmp_path / "cfg2.toml"], capsys)
    assert code == 0, err
    assert load_competition(tmp_path / "cfg2.toml").data.label_column == "level"


def test_label_column_of_integers_in_numeric_order(tmp_path, capsys):
    """Integer labels 0..11 are classes '0'..'11' in numeric order (not '0', '1', '10', '11', '2', ...); ids carry the extension."""
    train = pd.DataFrame({"file": [f"im{i}.png" for i in range(48)], "target": [i % 12 for i in range(48)]})
    sample = pd.DataFrame({"file": [f"te{i}.png" for i in range(4)], "target": 0})
    data = write_folder(tmp_path, train, sample, "file", "images", "images", ext="")
    _, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.data.label_column == "target"
    assert cfg.data.train_images == "images/{id}"
    assert cfg.folds.n_folds == 4  # 4 images per class
    assert open_source(cfg).classes == [str(k) for k in range(12)]


def test_joined_labels_with_a_none_value(tmp_path, capsys):
    """Labels joined by ';' in one column, 'normal' (not a sample column) meaning no class: multi-label."""
    cells = ["Effusion", "Mass;Nodule", "normal", "Pleural Thickening", "Effusion;Mass", "Nodule", "normal", "Pleural Thickening;Nodule"]
    train = pd.DataFrame({"id": [f"r{i}" for i in range(40)], "findings": [cells[i % len(cells)] for i in range(40)]})
    sample = pd.DataFrame({"id": ["s1", "s2"], **{c: 0 for c in FINDINGS}})
    data = write_folder(tmp_path, train, sample, "id")
    _, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.task == "multi-label"
    assert (cfg.data.label_column, cfg.data.label_separator, cfg.data.none_label) == ("findings", ";", "normal")
    labels = open_source(cfg).train.labels
    assert labels[2].sum() == 0 and labels[1].tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("none_is_class", [False, True])
def test_nih_layout(tmp_path, capsys, none_is_class):
    """NIH's Data_Entry columns: 'Image Index' ids with the extension, 'Finding Labels' joined by '|' with 'No Finding'
    (a class when the sample has its column, else the all-zero row), 'Patient ID' for groups, the rest left out."""
    rng = np.random.default_rng(1)
    n = 60
    pool = ["No Finding", "Effusion", "Mass", "Nodule|Effusion", "Pleural Thickening", "Nodule", "Mass|Pleural Thickening"]
    train = pd.DataFrame({
        "Image Index": [f"{i:08d}_000.png" for i in range(n)],
        "Finding Labels": [pool[i % len(pool)] for i in range(n)],
        "Follow-up #": rng.integers(0, 5, n),
        "Patient ID": [i // 2 + 1 for i in range(n)],
        "Patient Age": rng.integers(20, 80, n),
        "Patient Gender": rng.choice(["M", "F"], n),
        "View Position": rng.choice(["PA", "AP"], n),
    })
    classes = (["No Finding"] if none_is_class else []) + FINDINGS
    sample = pd.DataFrame({"Image Index": [f"{90000000 + i}_000.png" for i in range(5)], **{c: 0 for c in classes}})
    data = write_folder(tmp_path, train, sample, "Image Index", "images", "images", ext="")
    _, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.task == "multi-label"
    assert (cfg.data.id_column, cfg.data.label_column, cfg.data.label_separator) == ("Image Index", "Finding Labels", "|")
    assert cfg.data.none_label == (None if none_is_class else "No Finding")
    assert cfg.data.patient_column == "Patient ID"
    assert cfg.data.train_images == "images/{id}"
    assert "# Columns left out of training: Follow-up #, Patient Age, Patient Gender, View Position" in (tmp_path / "cfg.toml").read_text()
    source = open_source(cfg)
    assert source.classes == classes
    assert source.train.labels[0].sum() == (1 if none_is_class else 0)


def _simple() -> tuple[pd.DataFrame, pd.DataFrame]:
    train = pd.DataFrame({"id": [f"a{i}" for i in range(20)], "A": [i % 2 for i in range(20)], "B": [1 - i % 2 for i in range(20)]})
    sample = pd.DataFrame({"id": ["t1", "t2"], "A": 0, "B": 0})
    return train, sample


@pytest.mark.parametrize(
    "case, key",
    [("two_ids", "data.id_column"), ("class_absent", "data.class_columns"), ("no_images", "data.train_images"),
     ("two_patients", "data.patient_column"), ("id_in_two_folders", "in two folders"), ("two_label_csvs", "data.train_csv"),
     ("no_labels_anywhere", "data.train_csv"), ("class_not_in_sample", "data.class_columns"),
     ("label_not_in_sample", "data.none_label = 'C'")],
)
def test_undecidable_stops_with_one_line(tmp_path, capsys, case, key):
    train, sample = _simple()
    if case == "two_ids":
        train["uid"] = [f"u{i}" for i in range(20)]
        sample["uid"] = ["v1", "v2"]
    elif case == "class_absent":
        sample["C"] = 0
    elif case == "class_not_in_sample":  # train.csv's one-hot has a class C the sample lacks
        train["C"] = 0
        train.loc[:4, ["A", "B", "C"]] = [0, 0, 1]
    elif case == "label_not_in_sample":  # a label column with a value C that is neither a sample column nor a "none" name
        train = pd.DataFrame({"id": train["id"], "findings": ["A", "B", "C", "A|B"] * 5})
    elif case == "two_patients":
        train["patient_id"] = [i // 2 for i in range(20)]
        train["subject"] = [i // 4 for i in range(20)]
    data = write_folder(tmp_path, train, sample, "id")
    if case == "id_in_two_folders":  # train/ split over two folders, one id in both
        (data / "train_b").mkdir()
        for path in sorted((data / "train").iterdir())[:8]:
            path.rename(data / "train_b" / path.name)
        (data / "train" / "a0.png").touch()
    elif case == "two_label_csvs":
        train.to_csv(data / "labels.csv", index=False)
    elif case == "no_labels_anywhere":
        (data / "train.csv").unlink()
    if case == "no_images":
        for path in list((data / "train").iterdir())[:3]:
            path.unlink()
    code, _, err = run_kit(["init", data, "--output", tmp_path / "cfg.toml"], capsys)
    assert_one_line_error(code, err, key)
    assert not (tmp_path / "cfg.toml").exists()


def test_existing_config_is_kept_unless_forced(tmp_path, capsys):
    train, sample = _simple()
    data = write_folder(tmp_path, train, sample, "id")
    config = tmp_path / "cfg.toml"
    config.write_text("# mine\n")
    code, _, err = run_kit(["init", data, "--output", config], capsys)
    assert_one_line_error(code, err, "--force")
    assert config.read_text() == "# mine\n"
    code, _, err = run_kit(["init", data, "--output", config, "--force", "--competition", "my-comp"], capsys)
    assert code == 0, err
    assert load_competition(config).kaggle.competition == "my-comp"


@pytest.mark.parametrize("separator, cells", [
    ("|", ["A", "A|B", "C", "B|C"]), (" ", ["0", "0 2", "1", "1 2 0"]), (" ", ["haze primary", "clear primary", "clear", "haze clear primary"]),
])
def test_label_sample_with_joined_labels(tmp_path, capsys, separator, cells):
    """A one-column sample whose train.csv joins several labels per cell: multi-label, the classes are the tokens."""
    train = pd.DataFrame({"id": [f"a{i}" for i in range(24)], "labels": [cells[i % 4] for i in range(24)]})
    sample = pd.DataFrame({"id": ["t1", "t2"], "labels": cells[0]})
    data = write_folder(tmp_path, train, sample, "id")
    _, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.task == "multi-label" and cfg.data.label_separator == separator
    source = open_source(cfg)
    assert len(source.classes) == 3 and source.train.labels[3].sum() == len(cells[3].split(separator))


def test_names_with_spaces_are_one_label(tmp_path, capsys):
    """'Pleural Thickening' is one class, not 'Pleural' and 'Thickening' joined by a space."""
    names = ["Pleural Thickening", "No Finding", "Mass", "Lung Opacity"]
    train = pd.DataFrame({"id": [f"a{i}" for i in range(24)], "label": [names[i % 4] for i in range(24)]})
    data = write_folder(tmp_path, train, pd.DataFrame({"id": ["t1"], "label": "Mass"}), "id")
    _, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.task == "multi-class" and open_source(cfg).classes == sorted(names)


def test_ids_that_are_paths(tmp_path, capsys):
    train = pd.DataFrame({"path": [f"train/p{i // 2}/v{i}.jpg" for i in range(20)], "label": ["x", "y"] * 10})
    sample = pd.DataFrame({"path": ["test/q/t1.jpg"], "label": "x"})
    data = tmp_path / "comp"
    for p in [*train["path"], *sample["path"]]:
        (data / p).parent.mkdir(parents=True, exist_ok=True)
        (data / p).touch()
    train.to_csv(data / "train.csv", index=False)
    sample.to_csv(data / "sample_submission.csv", index=False)
    _, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.data.train_images == cfg.data.test_images == "{id}"


def test_label_column_round_trip_to_a_submission(tiny_competition, tmp_path, capsys):
    """A competition whose train.csv has one integer label column and whose sample wants one label per row:
    kit init → folds → train (tiny model, 1 epoch, 2 folds) → blend → a CSV in the sample's own format
    (integers, the sample's id order) that kit submit --dry-run accepts."""
    from tests.conftest import TINY_VARIANT, model_toml

    source = tiny_competition.root / "data"
    data = tmp_path / "comp"
    data.mkdir()
    for folder in ("train", "test"):
        (data / folder).symlink_to(source / folder)
    one_hot_train = pd.read_csv(source / "train.csv", dtype={"id": str, "patient_id": str})
    classes = [c for c in one_hot_train.columns if c not in ("id", "patient_id")]
    labels = one_hot_train[classes].to_numpy().argmax(axis=1)
    pd.DataFrame({"id": one_hot_train["id"], "patient_id": one_hot_train["patient_id"], "label": labels}).to_csv(data / "train.csv", index=False)
    test_ids = pd.read_csv(source / "sample_submission.csv", dtype={"id": str})["id"][::-1]  # the sample's own order
    pd.DataFrame({"id": test_ids, "label": 0}).to_csv(data / "sample_submission.csv", index=False)
    (data / "SYNTHETIC").touch()

    config = tmp_path / "cfg.toml"
    code, _, err = run_kit(["init", data, "--output", config, "--competition", "label-comp"], capsys)
    assert code == 0, err
    models = tmp_path / "models"
    models.mkdir()
    quick = {"epochs": 1, "freeze_epochs": 0, "warmup_epochs": 0, "ema_decay": 0.0, "tta_hflip": False, "augment": "none"}
    (models / "tiny.toml").write_text(model_toml({**TINY_VARIANT, **quick}))
    text = config.read_text()
    text = re.sub(r"n_folds = \d+", "n_folds = 2", text)
    text = re.sub(r"variants = \[.*\]", 'variants = ["tiny"]', text).replace('models = "configs/models"', f'models = "{models}"')
    config.write_text(text)
    for step in (["folds"], ["train"], ["blend", "--name", "lab"]):
        code, out, err = run_kit(["--config", config, *step], capsys)
        assert code == 0, (step, err)
    written = pd.read_csv(tmp_path / "submissions" / "label-comp" / "lab.csv", dtype=str)
    assert list(written.columns) == ["id", "label"]
    assert written["id"].tolist() == test_ids.tolist()
    assert set(written["label"]) <= {str(k) for k in range(len(classes))}
    code, out, err = run_kit(["--config", config, "submit", "-m", "label round trip", "--dry-run"], capsys)
    assert code == 0, err
    assert "lab.csv" in out
    written.loc[0, "label"] = "99"
    written.to_csv(tmp_path / "bad.csv", index=False)
    code, _, err = run_kit(["--config", config, "submit", "-m", "bad", "--dry-run", tmp_path / "bad.csv"], capsys)
    assert_one_line_error(code, err, "row 2", "'99'", "not one of the 20 classes")


def test_binary_target_with_metric_option(tmp_path, capsys):
    """A binary `image_name,target` competition: two classes from the label column, and `--metric roc_auc` written
    (submissions then hold the positive class's probability); an unknown metric is one line listing them all."""
    n = 30
    train = pd.DataFrame({"image_name": [f"ISIC_{i:04d}" for i in range(n)], "target": [int(i % 3 == 0) for i in range(n)]})
    sample = pd.DataFrame({"image_name": [f"ISIC_9{i:03d}" for i in range(8)], "target": 0})
    data = write_folder(tmp_path, train, sample, "image_name")
    _, cfg = init_and_folds(tmp_path, data, capsys, "--metric", "roc_auc")
    assert cfg.metric.name == "roc_auc" and cfg.task == "multi-class"
    assert open_source(cfg).classes == ["0", "1"]
    code, _, err = run_kit(["init", data, "--output", tmp_path / "other.toml", "--metric", "auc"], capsys)
    assert_one_line_error(code, err, "unknown metric 'auc'", "roc_auc", "log_loss", "quadratic_weighted_kappa")
    code, out, err = run_kit(["init", data, "--output", tmp_path / "plain.toml"], capsys)
    assert code == 0, err
    check = [line for line in (tmp_path / "plain.toml").read_text().splitlines() if "CHECK" in line][0]
    assert all(f'"{name}"' in check for name in ("linear", "macro_f1", "roc_auc", "log_loss", "mean_average_precision", "accuracy"))
