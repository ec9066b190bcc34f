"""Submissions of the values the metric scores: written in the sample's format, validated, and scored by `kit score`
equal to scikit-learn (binary probability sample, multi-label probability sample, long format, kappa label sample)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, log_loss, roc_auc_score

from kit.config import CompetitionConfig, DataConfig, MetricConfig, PathsConfig
from kit.errors import KitError
from kit.stages.score import score_file
from kit.submission import build_submission, read_csv_str, to_values, validate_submission, write_submission

TOL = 1e-9


def _config(tmp_path, *, task, metric, id_column, class_columns=None, data_dir=None):
    data = DataConfig(source="kaggle", dir=data_dir or tmp_path / "no-data", id_column=id_column, class_columns=class_columns)
    return CompetitionConfig(task=task, data=data, metric=MetricConfig(name=metric), paths=PathsConfig(submissions=tmp_path / "subs"))


def _write(path, frame):
    frame.to_csv(path, index=False)
    return path


def test_binary_probability_sample_round_trip_and_score(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    ids = np.array([f"ISIC_{i:05d}" for i in range(n)])
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "sample_submission.csv", pd.DataFrame({"image_name": ids[::-1], "target": 0}))  # the sample's order differs
    y = (rng.random(n) < 0.2).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    cfg = _config(tmp_path, task="multi-class", metric="roc_auc", id_column="image_name", data_dir=data)
    out = write_submission(np.stack([1 - p, p], axis=1), ids, ["0", "1"], cfg, "binary", {})
    written = read_csv_str(out)
    assert list(written.columns) == ["image_name", "target"] and written["image_name"].tolist() == ids[::-1].tolist()
    assert np.allclose(written["target"].astype(float).to_numpy(), p[::-1], atol=1e-9)
    _write(tmp_path / "solution.csv", pd.DataFrame({"image_name": ids, "target": y}))
    scoring = _config(tmp_path, task="multi-class", metric="roc_auc", id_column="image_name")  # no data dir: classes from the solution
    result = score_file(out, tmp_path / "solution.csv", scoring)
    values = written.set_index("image_name").loc[ids, "target"].astype(float).to_numpy()
    assert abs(result["score"] - roc_auc_score(y, values)) < TOL
    assert result["trivial_baseline"] == pytest.approx(0.5)
    log = score_file(out, tmp_path / "solution.csv", scoring.model_copy(update={"metric": MetricConfig(name="log_loss")}))
    assert abs(log["score"] - log_loss(y, values)) < TOL and log["direction"] == "minimize"
    assert log["trivial_baseline"] == pytest.approx(log_loss(y, np.full(n, y.mean())))  # the solution's prior (no training labels here)


def test_multi_label_probability_sample_round_trip_and_score(tmp_path):
    rng = np.random.default_rng(1)
    classes = ["Atelectasis", "Effusion", "Nodule"]
    n = 90
    ids = np.array([f"{i:04d}.png" for i in range(n)])
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "sample_submission.csv", pd.DataFrame({"Image": ids, **{c: 0.5 for c in classes}}))
    y = (rng.random((n, 3)) < [0.1, 0.3, 0.5]).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=(n, 3)) + y)))
    cfg = _config(tmp_path, task="multi-label", metric="log_loss", id_column="Image", class_columns=classes, data_dir=data)
    out = write_submission(p, ids, classes, cfg, "ml", {})
    written = read_csv_str(out)
    values = written[classes].astype(float).to_numpy()
    assert np.allclose(values, p, atol=1e-9)
    _write(tmp_path / "solution.csv", pd.DataFrame({"Image": ids, **{c: y[:, k] for k, c in enumerate(classes)}}))
    scoring = _config(tmp_path, task="multi-label", metric="log_loss", id_column="Image", class_columns=classes)
    result = score_file(out, tmp_path / "solution.csv", scoring)
    assert abs(result["score"] - np.mean([log_loss(y[:, k], values[:, k]) for k in range(3)])) < TOL
    auc = score_file(out, tmp_path / "solution.csv", scoring.model_copy(update={"metric": MetricConfig(name="roc_auc")}))
    assert abs(auc["score"] - np.mean([roc_auc_score(y[:, k], values[:, k]) for k in range(3)])) < TOL


def test_long_format_round_trip_and_score(tmp_path):
    rng = np.random.default_rng(2)
    classes = ["any", "epidural", "subdural"]
    images = np.array([f"{i:06x}" for i in range(40)])
    long_ids = [f"ID_{img}_{c}" for img in images for c in classes]
    sample = pd.DataFrame({"ID": long_ids, "Label": "0.5"})
    p = rng.random((len(images), 3))
    frame = build_submission(p, images, classes, sample, "ID", kind="probability")
    assert frame["ID"].tolist() == long_ids
    assert np.allclose(frame["Label"].astype(float).to_numpy(), p.ravel(), atol=1e-9)
    validate_submission(frame, sample, "multi-label", classes=classes, kind="probability")
    y = (rng.random((len(images), 3)) < 0.4).astype(int)
    _write(tmp_path / "solution.csv", pd.DataFrame({"ID": long_ids, "Label": y.ravel()}))
    _write(tmp_path / "sub.csv", frame)
    cfg = _config(tmp_path, task="multi-label", metric="log_loss", id_column="ID", class_columns=classes)
    result = score_file(tmp_path / "sub.csv", tmp_path / "solution.csv", cfg)
    assert abs(result["score"] - np.mean([log_loss(y[:, k], p[:, k]) for k in range(3)])) < 1e-8  # 9 digits written


def test_kappa_label_sample_round_trip_and_score(tmp_path):
    rng = np.random.default_rng(3)
    n = 100
    ids = np.array([f"img{i}" for i in range(n)])
    grades = ["0", "1", "2", "3", "4"]
    truth = rng.integers(0, 5, n)
    pred = np.clip(truth + rng.integers(-1, 2, n), 0, 4)
    sample = pd.DataFrame({"id_code": ids, "diagnosis": "0"})
    frame = build_submission(np.eye(5, dtype=np.uint8)[pred], ids, grades, sample, "id_code")
    assert frame["diagnosis"].astype(int).tolist() == pred.tolist()
    _write(tmp_path / "sub.csv", frame)
    _write(tmp_path / "solution.csv", pd.DataFrame({"id_code": ids, "diagnosis": truth}))
    cfg = _config(tmp_path, task="multi-class", metric="quadratic_weighted_kappa", id_column="id_code")
    result = score_file(tmp_path / "sub.csv", tmp_path / "solution.csv", cfg)
    assert abs(result["score"] - cohen_kappa_score(truth, pred, weights="quadratic")) < TOL


def test_probability_submissions_are_validated(tmp_path):
    ids = np.array(["a", "b"])
    sample = pd.DataFrame({"id": ids, "x": "0", "y": "0"})
    bad_range = pd.DataFrame({"id": ids, "x": ["0.2", "1.2"], "y": ["0.8", "0.1"]})
    with pytest.raises(KitError, match="row 3 .*column 'x' is '1.2'; expected a probability in"):
        validate_submission(bad_range, sample, "multi-label", classes=["x", "y"], kind="probability")
    bad_sum = pd.DataFrame({"id": ids, "x": ["0.2", "0.5"], "y": ["0.8", "0.1"]})
    with pytest.raises(KitError, match="row 3 .*sums to 0.6; multi-class probabilities must sum to 1"):
        validate_submission(bad_sum, sample, "multi-class", classes=["x", "y"], kind="probability")
    validate_submission(bad_sum, sample, "multi-label", classes=["x", "y"], kind="probability")  # multi-label columns are independent
    with pytest.raises(KitError, match="only for two classes"):
        to_values(pd.DataFrame({"id": ids, "label": ["0.1", "0.2"]}), ["p", "q", "r"], "id", "s.csv", "multi-class")
