"""Data foundation: synthetic benchmark, sources and their load checks, image cache, folds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.config import load_competition
from kit.data import cached_images, load_fold_assignment, make_folds, open_source
from kit.data import test_labels as read_test_labels
from kit.data.folds import assign_folds, fold_class_counts
from kit.data.synth import CLASSES, COMPETITION_COUNTS, generate, scale_counts
from kit.errors import KitError
from tests.conftest import REPO, assert_one_line_error, edit_csv, kaggle_copy, run_kit, write_config

# --- synthetic benchmark -----------------------------------------------------------------------


def test_scale_counts_keeps_design_proportions_total_and_floor():
    assert scale_counts(51043, min_per_class=1) == COMPETITION_COUNTS
    for n in (100, 300, 5000, 12345):
        counts = scale_counts(n, min_per_class=5)
        assert sum(counts.values()) == n
        assert min(counts.values()) >= 5
        assert list(counts) == CLASSES
    counts = scale_counts(5000)
    total = sum(COMPETITION_COUNTS.values())
    for name, n_competition in COMPETITION_COUNTS.items():
        expected = n_competition * 5000 / total
        if expected > 10:  # classes above the floor keep their share to within rounding (+ what the floor took)
            assert abs(counts[name] - expected) <= 1 or name == "No Finding", name
    with pytest.raises(KitError, match="too small"):
        scale_counts(50, min_per_class=5)


def test_synth_writes_competition_layout(tiny_competition):
    data = tiny_competition.root / "data"
    train = pd.read_csv(data / "train.csv", dtype={"id": str})
    assert list(train.columns) == ["id", "patient_id", *CLASSES]
    assert (train[CLASSES].sum(axis=1) == 1).all()
    assert train[CLASSES].sum().to_dict() == scale_counts(300)
    assert (data / "SYNTHETIC").is_file()
    pngs = sorted((data / "train").glob("*.png"))
    assert len(pngs) == 300 and len(list((data / "test").glob("*.png"))) == 100
    with Image.open(pngs[0]) as img:
        assert img.size == (32, 32) and img.mode == "L"
    sample = pd.read_csv(data / "sample_submission.csv", dtype={"id": str})
    solution = pd.read_csv(data / "solution.csv", dtype={"id": str})
    assert list(sample.columns) == ["id", *CLASSES] == list(solution.columns)
    assert (sample["No Finding"] == 1).all() and sample[CLASSES[1:]].to_numpy().sum() == 0
    assert sample["id"].tolist() == solution["id"].tolist()
    assert (solution[CLASSES].sum(axis=1) == 1).all() and (solution[CLASSES].sum() >= 1).all()
    assert not (data / "train" / "solution.csv").exists()
    # ~1.3 images per patient, some patients with several images of different classes
    per_patient = train.groupby("patient_id").size()
    assert 1.1 < per_patient.mean() < 1.5 and per_patient.max() >= 2


def test_synth_is_reproducible_and_findings_differ_by_class(tmp_path):
    generate(tmp_path / "a", n_train=100, n_test=20, size=24, seed=3, processes=1)
    generate(tmp_path / "b", n_train=100, n_test=20, size=24, seed=3, processes=1)
    generate(tmp_path / "c", n_train=100, n_test=20, size=24, seed=4, processes=1)
    def read(d, i):
        return np.asarray(Image.open(tmp_path / d / "train" / f"img_{i:06d}.png"))
    assert (tmp_path / "a" / "train.csv").read_bytes() == (tmp_path / "b" / "train.csv").read_bytes()
    assert all((read("a", i) == read("b", i)).all() for i in (1, 50, 100))
    assert (tmp_path / "a" / "train.csv").read_bytes() != (tmp_path / "c" / "train.csv").read_bytes()
    assert not (read("a", 1) == read("c", 1)).all()


def test_synth_class_findings_are_visible_and_distinct():
    """The same image with and without a finding differs visibly, and each class in its own way."""
    from kit.data.synth import draw_chest, patient_anatomy

    def draw(findings, i):
        return draw_chest(48, findings, np.random.default_rng([1, i]), patient_anatomy(np.random.default_rng([2, i]))).astype(float)

    maps = {}
    for name in CLASSES[1:]:
        diffs = np.stack([np.abs(draw([name], i) - draw([], i)) for i in range(20)])
        visible = (diffs >= 8).sum(axis=(1, 2))  # pixels changed by >= 8 gray levels, per image
        assert np.median(visible) >= 4, (name, visible)
        assert (visible > 0).mean() >= 0.8, (name, visible)
        maps[name] = diffs.mean(axis=0).ravel()
    names = list(maps)
    corr = np.corrcoef(np.stack([maps[n] for n in names]))
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            assert corr[a, b] < 0.97, (names[a], names[b], corr[a, b])


def test_synth_refuses_foreign_folder_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "important.txt").write_text("x")
    with pytest.raises(KitError, match="not made by `kit synth`"):
        generate(foreign, n_train=100, n_test=20, size=16, processes=1)
    assert (foreign / "important.txt").exists()

    import kit.data.synth as synth

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_draw_all", boom)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "out", n_train=100, n_test=20, size=16, processes=1)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_synth_cli_with_preview(tmp_path, capsys):
    code, out, err = run_kit(["synth", tmp_path / "s", "--n-train", "120", "--n-test", "30", "--size", "20", "--preview"], capsys)
    assert code == 0, err
    assert (tmp_path / "s" / "preview.png").is_file()
    assert str(tmp_path / "s" / "preview.png") in out.replace("\n", "")
    with Image.open(tmp_path / "s" / "preview.png") as img:
        assert img.size[0] > 100 and img.size[1] > 100


def test_synth_multilabel_chestmnist_format(tiny_chestmnist):
    path = tiny_chestmnist.root / "data" / "chestmnist.npz"
    with np.load(path) as npz:
        assert {"train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels", "synthetic"} <= set(npz.files)
        assert npz["train_images"].shape == (200, 28, 28) and npz["train_images"].dtype == np.uint8
        assert npz["val_labels"].shape == (50, 14) and npz["test_images"].shape == (100, 28, 28)
        prevalence = npz["train_labels"].mean(axis=0)
    assert (prevalence > 0).all() and (prevalence < 0.35).all()
    source = open_source(tiny_chestmnist.cfg)
    assert source.task == "multi-label" and source.synthetic and len(source.classes) == 14
    assert source.classes[0] == "atelectasis" and source.classes[-1] == "hernia"
    assert len(source.train) == 250 and source.train.ids[0] == "train_00000" and source.train.ids[200] == "val_00000"
    assert source.test.ids[0] == "test_00000" and source.test.labels is None
    with np.load(path) as npz:
        assert (source.train.read_image(201) == npz["val_images"][1]).all()
        assert (source.train.labels[:200] == npz["train_labels"]).all()
    truth = read_test_labels(tiny_chestmnist.cfg)
    assert truth.shape == (100, 15) and list(truth.columns[1:]) == source.classes


# --- Kaggle source and its load checks -------------------------------------------------------


def test_open_kaggle_source(tiny_competition):
    source = open_source(tiny_competition.cfg)
    assert source.classes == CLASSES and source.task == "multi-class" and source.synthetic
    assert source.train.labels.shape == (300, 20) and source.train.labels.dtype == np.uint8
    assert source.train.groups is not None and len(source.test) == 100 and source.test.labels is None
    img = source.train.read_image(0)
    assert img.shape == (32, 32) and img.dtype == np.uint8
    truth = read_test_labels(tiny_competition.cfg)
    assert truth.shape == (100, 21) and (truth[CLASSES].dtypes == np.uint8).all()


@pytest.mark.parametrize(
    "breakage, needles",
    [
        ("no_dir", ["data.dir", "does not exist", "make synth"]),
        ("no_train_csv", ["train.csv", "not found"]),
        ("no_id_column", ["no id column 'id'", "data.id_column"]),
        ("zero_labels", ["train.csv", "2 rows have no active label", "img_000001"]),
        ("two_labels", ["train.csv", "1 rows have several active labels", "img_000003"]),
        ("not_binary", ["train.csv", "class column", "not 0 or 1"]),
        ("duplicate_train", ["train.csv", "duplicate ids", "img_000001"]),
        ("duplicate_test", ["sample_submission.csv", "duplicate ids", "test_000002"]),
        ("sample_columns", ["sample_submission.csv", "class columns differ", "Bogus", "Hernia"]),
        ("missing_images", ["2 of 300 train images are missing", "img_000007.png", 'on_bad_image = "skip"']),
        ("bad_pattern", ["data.train_images", "not a valid pattern"]),
    ],
)
def test_kaggle_load_errors_are_one_line(tiny_competition, tmp_path, capsys, breakage, needles):
    keys = {"train_images": "train/{idx}.png"} if breakage == "bad_pattern" else {}
    config = kaggle_copy(tiny_competition, tmp_path, **keys)
    data = tmp_path / "data"
    if breakage == "no_dir":
        shutil.rmtree(data)
    elif breakage == "no_train_csv":
        (data / "train.csv").unlink()
    elif breakage == "no_id_column":
        edit_csv(data / "train.csv", lambda f: f.rename(columns={"id": "image"}))
    elif breakage == "zero_labels":
        edit_csv(data / "train.csv", lambda f: f.loc.__setitem__(([0, 5], CLASSES), 0))
    elif breakage == "two_labels":
        edit_csv(data / "train.csv", lambda f: f.loc.__setitem__((2, CLASSES), 1))
    elif breakage == "not_binary":
        edit_csv(data / "train.csv", lambda f: f.loc.__setitem__((3, "Hernia"), 7))
    elif breakage == "duplicate_train":
        edit_csv(data / "train.csv", lambda f: f.loc.__setitem__((4, "id"), "img_000001"))
    elif breakage == "duplicate_test":
        edit_csv(data / "sample_submission.csv", lambda f: f.loc.__setitem__((0, "id"), "test_000002"))
    elif breakage == "sample_columns":
        edit_csv(data / "sample_submission.csv", lambda f: f.rename(columns={"Hernia": "Bogus"}))
    elif breakage == "missing_images":
        (data / "train" / "img_000007.png").unlink()
        (data / "train" / "img_000009.png").unlink()
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "folds" / "folds.csv").exists()


def test_label_column_formats(tiny_competition, tmp_path):
    config = kaggle_copy(tiny_competition, tmp_path, label_column="label")
    data = tmp_path / "data"
    frame = pd.read_csv(data / "train.csv", dtype={"id": str})
    labels = np.array(CLASSES)[frame[CLASSES].to_numpy().argmax(axis=1)]
    pd.DataFrame({"id": frame["id"], "patient_id": frame["patient_id"], "label": labels}).to_csv(data / "train.csv", index=False)
    source = open_source(load_competition(config))
    assert source.classes == CLASSES  # order from sample_submission's class columns
    assert (source.train.labels == frame[CLASSES].to_numpy()).all()

    # multi-label: '|' separated names, empty = no label
    ml = pd.DataFrame({"id": frame["id"], "label": ["Effusion|Mass", "", *labels[2:]]})
    ml.to_csv(data / "train.csv", index=False)
    text = config.read_text().replace('task = "multi-class"', 'task = "multi-label"')
    config.write_text(text)
    source = open_source(load_competition(config))
    row0 = dict(zip(source.classes, source.train.labels[0]))
    assert row0["Effusion"] == 1 and row0["Mass"] == 1 and sum(row0.values()) == 2
    assert source.train.labels[1].sum() == 0 and source.train.groups is None


def test_missing_and_unreadable_images_skip_or_stop(tiny_competition, tmp_path, capsys):
    config = kaggle_copy(tiny_competition, tmp_path, on_bad_image="skip")
    data = tmp_path / "data"
    (data / "train" / "img_000007.png").unlink()
    (data / "train" / "img_000010.png").write_bytes(b"not a png at all")
    cfg = load_competition(config)
    source = open_source(cfg)
    assert "1 of 300 train images are missing" in capsys.readouterr().err
    assert source.train.missing is not None and int(source.train.missing.sum()) == 1
    with pytest.raises(KitError, match="img_000007.png: image file is missing"):
        source.train.read_image(6)
    with pytest.raises(KitError, match="img_000010.png: cannot read image"):
        source.train.read_image(9)
    cache = cached_images(source.train, 32, cfg.paths.cache, on_bad_image="skip")
    assert "2 train images could not be read" in capsys.readouterr().err
    assert cache.ok.sum() == 298 and not cache.ok[6] and not cache.ok[9]
    assert cache.images[6].max() == 0 and cache.images[9].max() == 0
    # the same cache opened under "stop" refuses, naming the files
    with pytest.raises(KitError, match="2 train images were unreadable.*img_000007.png"):
        cached_images(source.train, 32, cfg.paths.cache, on_bad_image="stop")
    # folds still cover every row (the trainer drops ok=False rows explicitly)
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "folds" / "folds.csv")) == 300


def test_unreadable_image_stops_cache_build_with_its_path(tiny_competition, tmp_path):
    config = kaggle_copy(tiny_competition, tmp_path)
    (tmp_path / "data" / "train" / "img_000010.png").write_bytes(b"\x89PNG broken")
    cfg = load_competition(config)
    source = open_source(cfg)
    with pytest.raises(KitError, match="img_000010.png: cannot read image"):
        cached_images(source.train, 16, cfg.paths.cache)
    assert not list(Path(cfg.paths.cache).glob("*.u8")) and not list(Path(cfg.paths.cache).glob("*.json"))


def test_npz_errors_name_file_and_key(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    config = write_config(tmp_path, f'source = "medmnist"\ndir = "{data}"', "multi-label", ["chestmnist_cnn"])
    rng = np.random.default_rng(0)
    good = {
        "train_images": rng.integers(0, 255, (10, 8, 8), dtype=np.uint8), "train_labels": np.zeros((10, 14), np.uint8),
        "val_images": rng.integers(0, 255, (4, 8, 8), dtype=np.uint8), "val_labels": np.zeros((4, 14), np.uint8),
        "test_images": rng.integers(0, 255, (5, 8, 8), dtype=np.uint8), "test_labels": np.zeros((5, 14), np.uint8),
    }
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, "chestmnist.npz", "not found")
    bad = {k: v for k, v in good.items() if k != "test_images"}
    np.savez(data / "chestmnist.npz", **bad)
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, "chestmnist.npz", "missing key 'test_images'")
    np.savez(data / "chestmnist.npz", **{**good, "train_images": np.zeros((10, 8), np.uint8)})
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, "chestmnist.npz", "key 'train_images' has shape (10, 8)")
    np.savez(data / "chestmnist.npz", **{**good, "train_labels": np.zeros((9, 14), np.uint8)})
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, "chestmnist.npz", "'train_labels' has 9 rows")
    # RGB and (N, H, W, 1) images are read as grayscale
    rgb = rng.integers(0, 255, (10, 8, 8, 3), dtype=np.uint8)
    np.savez(data / "chestmnist.npz", **{**good, "train_images": rgb, "val_images": good["val_images"][..., None]})
    source = open_source(load_competition(config))
    expected = np.asarray(Image.fromarray(rgb[2], mode="RGB").convert("L"))
    assert (source.train.read_image(2) == expected).all()
    assert (source.train.read_image(11) == good["val_images"][1]).all()
    assert not source.synthetic


@pytest.mark.subprocess
def test_cli_error_exit_code_in_a_real_process(tmp_path):
    """The console entry point itself: exit code 2, one line on stderr, no traceback."""
    config = write_config(tmp_path, f'dir = "{tmp_path / "nowhere"}"', "multi-class", [])
    proc = subprocess.run([sys.executable, "-m", "kit", "--config", str(config), "folds"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "data.dir" in proc.stderr and str(config) in proc.stderr


# --- image cache -------------------------------------------------------------------------------


def test_cache_round_trips_pixel_exact_and_is_read_only(tiny_competition, tmp_path):
    source = open_source(tiny_competition.cfg)
    cache = cached_images(source.train, 32, tmp_path / "cache")
    assert isinstance(cache.images, np.memmap) and cache.images.shape == (300, 32, 32) and cache.ok.all()
    for i in (0, 57, 299):
        with Image.open(source.train.paths[i]) as img:
            assert (cache.images[i] == np.asarray(img)).all()
    with pytest.raises(ValueError):
        cache.images[0, 0, 0] = 1
    small = cached_images(source.train, 16, tmp_path / "cache")
    assert small.images.shape == (300, 16, 16)
    assert abs(float(small.images[0].mean()) - float(cache.images[0].mean())) < 8
    test = cached_images(source.test, 32, tmp_path / "cache")
    assert test.images.shape == (100, 32, 32)


def test_cache_is_reused_and_rebuilt_when_the_source_changes(tiny_competition, tmp_path):
    config = kaggle_copy(tiny_competition, tmp_path)
    cfg = load_competition(config)
    source = open_source(cfg)
    first = cached_images(source.train, 32, cfg.paths.cache)
    files = sorted(Path(cfg.paths.cache).glob("*.u8"))
    stamp = files[0].stat().st_mtime_ns
    again = cached_images(open_source(cfg).train, 32, cfg.paths.cache)
    assert sorted(Path(cfg.paths.cache).glob("*.u8")) == files and files[0].stat().st_mtime_ns == stamp
    assert (again.images[4] == first.images[4]).all()
    # a changed image (new content, new mtime) gives a new fingerprint and a rebuilt cache
    path = tmp_path / "data" / "train" / "img_000005.png"
    Image.fromarray(np.full((32, 32), 7, np.uint8), mode="L").save(path)
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    changed = open_source(cfg)
    assert changed.train.fingerprint != source.train.fingerprint
    rebuilt = cached_images(changed.train, 32, cfg.paths.cache)
    assert (rebuilt.images[4] == 7).all() and (rebuilt.images[3] == first.images[3]).all()
    # a changed CSV changes the fingerprint too
    edit_csv(tmp_path / "data" / "train.csv", lambda f: f.loc.__setitem__((0, "patient_id"), "p999999"))
    assert open_source(cfg).train.fingerprint != changed.train.fingerprint


def test_cache_of_npz_round_trips(tiny_chestmnist, tmp_path):
    source = open_source(tiny_chestmnist.cfg)
    cache = cached_images(source.train, 28, tmp_path / "cache")
    with np.load(tiny_chestmnist.root / "data" / "chestmnist.npz") as npz:
        expected = np.concatenate([npz["train_images"], npz["val_images"]])
    assert (np.asarray(cache.images) == expected).all()


def test_half_written_cache_is_not_used(tiny_competition, tmp_path):
    source = open_source(tiny_competition.cfg)
    cache_dir = tmp_path / "cache"
    cached_images(source.train, 16, cache_dir)
    data_file = next(cache_dir.glob("*.u8"))
    data_file.write_bytes(data_file.read_bytes()[:100])  # truncated, e.g. by a full disk
    cache = cached_images(source.train, 16, cache_dir)
    assert cache.images.shape == (300, 16, 16) and data_file.stat().st_size == 300 * 16 * 16


# --- folds -------------------------------------------------------------------------------------


def test_folds_are_stratified_grouped_and_reproducible(tiny_competition, tmp_path, capsys):
    cfg = tiny_competition.cfg
    code, out, err = run_kit(["--config", tiny_competition.config_path, "folds"], capsys)
    assert code == 0, err
    assert "fold 2" in out and "Pneumomediastinum" in out
    path = Path(cfg.folds.path)
    first = path.read_bytes()
    folds = pd.read_csv(path, dtype={"id": str})
    source = open_source(cfg)
    assert folds["id"].tolist() == source.train.ids.tolist() and set(folds["fold"]) == {0, 1, 2}
    counts = fold_class_counts(source.train.labels, folds["fold"].to_numpy(), 3)
    assert (counts.min(axis=0) >= 1).all()  # every class (>= 5 images) in every fold
    assert (counts.max(axis=0) - counts.min(axis=0) <= 2).all()
    assert (counts.max(axis=0) - counts.min(axis=0) <= 1).mean() >= 0.8
    patient_folds = pd.DataFrame({"p": source.train.groups, "f": folds["fold"]}).groupby("p")["f"].nunique()
    assert (patient_folds == 1).all() and (pd.Series(source.train.groups).value_counts() > 1).any()
    assert (load_fold_assignment(cfg, source.train.ids) == folds["fold"].to_numpy()).all()
    # same seed -> identical file; another seed -> another assignment
    make_folds(cfg)
    assert path.read_bytes() == first
    other = cfg.model_copy(update={"folds": cfg.folds.model_copy(update={"seed": 1, "path": tmp_path / "f.csv"})})
    make_folds(other)
    assert (tmp_path / "f.csv").read_bytes() != first


def test_assign_folds_stratifies_exactly_and_needs_enough_patients():
    labels = np.eye(3, dtype=np.uint8)[[0] * 20 + [1] * 10 + [2] * 2]
    fold = assign_folds(labels, None, 5, 0, "multi-class")
    counts = fold_class_counts(labels, fold, 5)
    assert (counts[:, 0] == 4).all() and (counts[:, 1] == 2).all()
    with pytest.raises(KitError, match="only 3 patients for 5 folds"):
        assign_folds(labels[:3], np.array(["a", "b", "c"]), 5, 0, "multi-class")


def test_multilabel_folds_iteratively_stratified(tiny_chestmnist, capsys):
    frame = make_folds(tiny_chestmnist.cfg)
    source = open_source(tiny_chestmnist.cfg)
    counts = fold_class_counts(source.train.labels, frame["fold"].to_numpy(), 3)
    expected = source.train.labels.sum(axis=0) / 3
    assert (np.abs(counts - expected) <= np.maximum(2, 0.25 * expected)).all()
    # grouped multi-label: patients stratified first, then expanded
    groups = np.array([f"p{i // 2}" for i in range(len(source.train))])
    fold = assign_folds(source.train.labels, groups, 3, 0, "multi-label")
    assert (pd.DataFrame({"g": groups, "f": fold}).groupby("g")["f"].nunique() == 1).all()


def test_load_fold_assignment_rejects_other_ids(tiny_competition, capsys):
    cfg = tiny_competition.cfg
    make_folds(cfg)
    with pytest.raises(KitError, match="ids do not match the training data"):
        load_fold_assignment(cfg, np.array(["img_000001", "nope"]))


def test_multiclass_npz_with_index_labels(tmp_path):
    """Other MedMNIST sets store one class index per row, shape (N, 1)."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    def y(n):
        return rng.integers(0, 4, (n, 1)).astype(np.uint8)
    arrays = {f"{s}_images": rng.integers(0, 255, (n, 8, 8), dtype=np.uint8) for s, n in (("train", 30), ("val", 6), ("test", 9))}
    labels = {"train_labels": y(30), "val_labels": y(6), "test_labels": y(9)}
    labels["train_labels"][0] = 3
    np.savez(data / "chestmnist.npz", **arrays, **labels)
    config = write_config(tmp_path, f'source = "medmnist"\ndir = "{data}"', "multi-class", ["cnn_demo"])
    cfg = load_competition(config)
    source = open_source(cfg)
    assert source.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert (source.train.labels.sum(axis=1) == 1).all()
    assert (source.train.labels.argmax(axis=1) == np.concatenate([labels["train_labels"], labels["val_labels"]])[:, 0]).all()
    truth = read_test_labels(cfg)
    assert (truth[source.classes].to_numpy().argmax(axis=1) == labels["test_labels"][:, 0]).all()


def test_empty_patient_ids_are_separate_groups(tiny_competition, tmp_path):
    config = kaggle_copy(tiny_competition, tmp_path)
    edit_csv(tmp_path / "data" / "train.csv", lambda f: f.loc.__setitem__((list(range(10)), "patient_id"), None))
    groups = open_source(load_competition(config)).train.groups
    assert len(set(groups[:10].tolist())) == 10 and not set(groups[:10]) & set(groups[10:])
