"""Reliability at the command line: no silent wrong result, no traceback.

Each case is a fault a new user can meet. Every test asserts the exit code, that the message is one
line naming the file (and the row or key), that nothing was written and that earlier outputs are intact.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rich.console import Console

from kit.config import load_competition
from kit.data import cached_images, open_source
from kit.data.folds import check_every_class_fits
from kit.errors import KitError
from kit.files import atomic_write
from kit.stages.train import train
from tests.conftest import REPO, TINY_VARIANT, assert_one_line_error, clone_grid, edit_csv, kaggle_copy, model_toml, run_kit, sigint_to_default, write_config


def quiet() -> Console:
    return Console(quiet=True)


@pytest.fixture(scope="module")
def trained(tiny_grid) -> Path:
    """A finished 3-fold run of a tiny variant: data/, folds/, runs/, oof/, models/ and competition.toml under one
    root (the session's shared grid: read only, every test clones it)."""
    return tiny_grid.root


def clone(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained root (copy2 keeps mtimes: the same images keep their fingerprint)."""
    return clone_grid(trained, tmp_path)


def kit(root: Path, capsys, *args) -> tuple[int, str, str]:
    return run_kit(["--config", root / "competition.toml", *args], capsys)


def snapshot(root: Path, *folders: str) -> dict[str, bytes]:
    """Every file under the given folders, by relative path: to show that earlier outputs are intact."""
    return {str(p.relative_to(root)): p.read_bytes() for f in folders for p in sorted((root / f).rglob("*")) if p.is_file()}


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name or p.name.startswith(".kit-write-check")]


def change_one_label(data: Path) -> str:
    """Move the first 'No Finding' image to 'Effusion' (both stay large classes); returns its id."""
    frame = pd.read_csv(data / "train.csv", dtype={"id": str})
    row = int(np.flatnonzero(frame["No Finding"].to_numpy() == 1)[0])
    frame.loc[row, "No Finding"], frame.loc[row, "Effusion"] = 0, 1
    frame.to_csv(data / "train.csv", index=False)
    return str(frame.loc[row, "id"])


# silent wrong results


@pytest.mark.parametrize("name", ["sample_submission.csv", "train.csv"])
def test_header_only_csv_is_a_data_error(trained, tmp_path, capsys, name):
    root = clone(trained, tmp_path)
    path = root / "data" / name
    path.write_text(path.read_text().splitlines()[0] + "\n")
    before = snapshot(root, "folds")
    code, _, err = kit(root, capsys, "folds")
    assert_one_line_error(code, err, str(path), "has a header but no rows")
    assert "patients" not in err
    assert snapshot(root, "folds") == before


def test_npz_with_an_empty_test_set_is_a_data_error(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.savez(
        data / "chestmnist.npz",
        train_images=rng.integers(0, 255, (12, 8, 8), dtype=np.uint8), train_labels=np.eye(14, dtype=np.uint8)[np.arange(12)],
        test_images=np.zeros((0, 8, 8), np.uint8),
    )
    config = write_config(tmp_path, f'source = "medmnist"\ndir = "{data}"', "multi-label", ["chestmnist_cnn"])
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, "chestmnist.npz", "'test_images' has 0 rows")
    assert not (tmp_path / "folds").exists()


@pytest.mark.parametrize("damage, needle", [
    ("garbage", "not a readable npz archive"),
    ("truncated", "not a readable npz archive"),
    ("uint16", "key 'train_images' has shape (12, 8, 8) and dtype uint16; expected uint8"),
])
def test_damaged_or_deep_data_npz_is_one_line(tmp_path, capsys, damage, needle):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 8, 8), dtype=np.uint8)
    arrays = dict(train_images=images.astype(np.uint16) * 257 if damage == "uint16" else images,
                  train_labels=np.eye(14, dtype=np.uint8)[np.arange(12)], test_images=images[:4])
    path = data / "chestmnist.npz"
    np.savez(path, **arrays)
    if damage == "garbage":
        path.write_text("not an archive at all\n")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:700])
    config = write_config(tmp_path, f'source = "medmnist"\ndir = "{data}"', "multi-label", ["chestmnist_cnn"])
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, str(path), needle)
    assert "pickled" not in err and not (tmp_path / "folds").exists()


def _deep_variants(u: np.ndarray) -> dict[str, tuple[Image.Image, np.ndarray]]:
    """Deeper-than-8-bit versions of the 8-bit image u, and what reading them must give: u stretched over 0..255."""
    lo, hi = int(u.min()), int(u.max())
    stretched = np.rint((u.astype(np.float64) - lo) * 255.0 / (hi - lo)).astype(np.uint8)
    return {
        "png16_12bit": (Image.fromarray(u.astype(np.uint16) * 16 + 3), stretched),
        "png16_full": (Image.fromarray(u.astype(np.uint16) * 257), stretched),
        "tiff_int32": (Image.fromarray(u.astype(np.int32) * 1000 - 5000), stretched),
        "tiff_float": (Image.fromarray((u / 255.0 * 0.7 + 0.1).astype(np.float32)), stretched),
        "png16_constant": (Image.fromarray(np.full(u.shape, 3000, np.uint16)), np.zeros(u.shape, np.uint8)),
    }


@pytest.mark.parametrize("kind", ["png16_12bit", "png16_full", "tiff_int32", "tiff_float", "png16_constant"])
def test_deep_images_are_read_by_their_value_range(tiny_competition, tmp_path, kind):
    config = kaggle_copy(tiny_competition, tmp_path)
    path = tmp_path / "data" / "train" / "img_000001.png"  # PIL reads a file by its content, whatever its suffix
    original = np.asarray(Image.open(path))
    img, expected = _deep_variants(original)[kind]
    img.save(path, format="TIFF" if kind.startswith("tiff") else "PNG")
    with Image.open(path) as check:
        assert check.mode in ("I;16", "I", "F")  # really a deep image, not an 8-bit one
    cfg = load_competition(config)
    source = open_source(cfg)
    got = source.train.read_image(0)
    assert got.dtype == np.uint8 and got.shape == original.shape
    assert np.abs(got.astype(int) - expected).max() <= (1 if kind == "tiff_float" else 0)
    if kind != "png16_constant":
        assert not (got == 255).all() and np.corrcoef(got.ravel(), original.ravel())[0, 1] > 0.999
    cache = cached_images(source.train, 32, cfg.paths.cache)
    assert np.array_equal(cache.images[0], got)


def test_non_square_images_are_stretched_with_one_notice(tiny_competition, tmp_path, capsys):
    config = kaggle_copy(tiny_competition, tmp_path)
    train_dir = tmp_path / "data" / "train"
    wide = np.tile(np.arange(40, dtype=np.uint8) * 6, (32, 1))
    for i in (1, 2, 3):
        Image.fromarray(wide, mode="L").save(train_dir / f"img_00000{i}.png")
    cfg = load_competition(config)
    source = open_source(cfg)
    cache = cached_images(source.train, 32, cfg.paths.cache)
    err = capsys.readouterr().err
    assert len(re.findall("not square", err)) == 1
    assert "3 of 300 train images are not square" in err and "img_000001.png: 40x32" in err and "stretched to 32x32" in err
    expected = np.asarray(Image.fromarray(wide, mode="L").resize((32, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(cache.images[0], expected)
    cached_images(open_source(cfg).train, 32, cfg.paths.cache)  # the cache is reused: nothing said again
    assert "not square" not in capsys.readouterr().err


def test_resume_after_labels_changed_refuses_and_keeps_the_oof(trained, tmp_path, capsys):
    root = clone(trained, tmp_path)
    change_one_label(root / "data")
    before = snapshot(root, "oof", "runs")
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--resume")
    assert_one_line_error(code, err, str(root / "runs" / "tiny" / "fold0" / "preds.npz"), "train labels changed",
                          "--fold 0` without --resume")
    assert snapshot(root, "oof", "runs") == before


def test_resume_after_an_image_changed_names_the_images(trained, tmp_path, capsys):
    root = clone(trained, tmp_path)
    png = root / "data" / "train" / "img_000005.png"
    Image.fromarray(np.full((32, 32), 9, np.uint8), mode="L").save(png)
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--resume")
    assert_one_line_error(code, err, "preds.npz", "train images changed")
    assert "train labels" not in err


def test_resume_after_folds_changed_names_the_folds(trained, tmp_path, capsys):
    root = clone(trained, tmp_path)
    config = root / "competition.toml"
    config.write_text(config.read_text().replace("seed = 0\npath", "seed = 7\npath"))
    code, _, _ = kit(root, capsys, "folds")
    assert code == 0
    before = snapshot(root, "oof")
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--resume")
    assert_one_line_error(code, err, "preds.npz", "folds changed")
    assert snapshot(root, "oof") == before


def test_resume_after_the_model_config_changed_names_it(trained, tmp_path, capsys):
    root = clone(trained, tmp_path)
    (root / "models" / "tiny.toml").write_text(model_toml(TINY_VARIANT).replace("lr = 0.003", "lr = 0.001"))
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--resume")
    assert_one_line_error(code, err, "preds.npz", "model config changed")


def test_resume_after_the_metric_changed_names_it(trained, tmp_path, capsys):
    """Checkpoints are chosen by the metric: a changed w means those folds are not the current job."""
    root = clone(trained, tmp_path)
    config = root / "competition.toml"
    config.write_text(config.read_text() + "\n[metric]\nw = 3.0\n")
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--resume")
    assert_one_line_error(code, err, "preds.npz", "metric changed")


def test_loader_worker_keys_do_not_change_a_jobs_identity():
    from kit.config import ModelConfig
    from kit.training.identity import job_identity

    base = ModelConfig(name="t")
    same = base.model_copy(update={"num_workers": 4, "persistent_workers": False, "prefetch_factor": 8})
    other = base.model_copy(update={"lr": base.lr * 2})
    assert job_identity(same, {}) == job_identity(base, {}) != job_identity(other, {})


def test_resume_with_unchanged_inputs_skips_every_fold(trained, tmp_path, capsys):
    root = clone(trained, tmp_path)  # moved to another folder: still the same inputs
    before = snapshot(root, "runs")
    code, out, err = kit(root, capsys, "train", "--variant", "tiny", "--resume")
    assert code == 0, err
    assert out.count("already done") == 3
    assert snapshot(root, "runs") == before


def test_resume_of_an_interrupted_fold_after_labels_changed_names_the_checkpoint(trained, tmp_path, capsys):
    root = clone(trained, tmp_path)
    cfg = load_competition(root / "competition.toml")
    fold0 = root / "runs" / "tiny" / "fold0"
    earlier = {name: (fold0 / name).read_bytes() for name in ("preds.npz", "last.pt", "best.pt")}
    train(cfg, ["tiny"], [0], resume=False, stop_after_epoch=1, console=quiet())
    assert (fold0 / "last.pt").is_file() and not (fold0 / "preds.npz").exists()
    # a fresh run that did not finish loses nothing of the earlier one: its files are kept aside until the new preds exist
    assert {name: (fold0 / f"{name}.previous").read_bytes() for name in earlier} == earlier
    change_one_label(root / "data")
    before = snapshot(root, "runs", "oof")
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--fold", "0", "--resume")
    assert_one_line_error(code, err, str(fold0 / "last.pt"), "train labels changed")
    assert snapshot(root, "runs", "oof") == before


def test_assemble_refuses_folds_trained_on_other_labels(trained, tmp_path, capsys):
    root = clone(trained, tmp_path)
    change_one_label(root / "data")
    before = snapshot(root, "oof")
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--fold", "0")  # fold 0 retrained, 1 and 2 are stale
    assert_one_line_error(code, err, str(root / "runs" / "tiny" / "fold1" / "preds.npz"), "train labels changed", "--fold 1")
    assert snapshot(root, "oof") == before


def test_folds_refuse_more_folds_than_the_smallest_class_allows(trained, tmp_path, capsys):
    root = clone(trained, tmp_path)
    config = root / "competition.toml"
    config.write_text(config.read_text().replace("n_folds = 3", "n_folds = 6"))
    before = snapshot(root, "folds")
    code, _, err = kit(root, capsys, "folds")
    assert_one_line_error(code, err, str(config), "folds.n_folds = 6", "class 'Pneumoperitoneum' has 5 images of 4 patients",
                          "set folds.n_folds = 4")
    assert snapshot(root, "folds") == before
    config.write_text(config.read_text().replace("n_folds = 6", "n_folds = 4"))
    code, _, err = kit(root, capsys, "folds")  # the offered K works
    assert code == 0, err


def test_a_class_of_one_image_fits_no_cross_validation(tiny_competition):
    labels = np.eye(3, dtype=np.uint8)[[0] * 10 + [1] * 10 + [2]]
    with pytest.raises(KitError, match="class 'c' has 1 image; .*no cross-validation can hold it out"):
        check_every_class_fits(labels, None, ["a", "b", "c"], tiny_competition.cfg)


# tracebacks that must be one line


def test_non_utf8_byte_in_the_config(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_bytes(b'task = "multi-class"\n# caf\xe9 au lait\n')
    code, _, err = run_kit(["--config", path, "folds"], capsys)
    assert_one_line_error(code, err, str(path), "not UTF-8", "byte 0xe9 at line 2")


def test_non_utf8_byte_in_a_model_config(trained, tmp_path, capsys):
    root = clone(trained, tmp_path)
    (root / "models" / "bad.toml").write_bytes(b"epochs = 1 # \xff\n")
    code, _, err = kit(root, capsys, "train", "--variant", "bad")
    assert_one_line_error(code, err, str(root / "models" / "bad.toml"), "not UTF-8")


@pytest.mark.parametrize("content, needle", [(b"", "file is empty"), (b"id,No Finding\ntest_1,1\nt\xe9st_2,1\n", "byte 0xe9 at line 3")])
def test_empty_or_non_utf8_sample_submission(trained, tmp_path, capsys, content, needle):
    root = clone(trained, tmp_path)
    path = root / "data" / "sample_submission.csv"
    path.write_bytes(content)
    before = snapshot(root, "folds")
    code, _, err = kit(root, capsys, "folds")
    assert_one_line_error(code, err, str(path), needle)
    assert snapshot(root, "folds") == before


@pytest.mark.parametrize("command", ["calibrate", "blend"])
@pytest.mark.parametrize("damage, needle", [("truncated", "truncated or corrupt"), ("garbage", "not an npz archive")])
def test_damaged_oof_file(trained, tmp_path, capsys, command, damage, needle):
    root = clone(trained, tmp_path)
    path = root / "oof" / "tiny.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"these are not the logits you are looking for\n")
    before = snapshot(root, "oof")
    code, _, err = kit(root, capsys, command)
    assert_one_line_error(code, err, str(path), needle, "kit train --variant tiny")
    assert "pickled" not in err
    assert snapshot(root, "oof") == before and not (root / "submissions").exists()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("name", ["preds.npz", "last.pt", "best.pt"])
def test_resume_with_a_damaged_run_file_names_it(trained, tmp_path, capsys, name):
    root = clone(trained, tmp_path)
    fold0 = root / "runs" / "tiny" / "fold0"
    if name != "preds.npz":  # an interrupted fold: last.pt and best.pt, no preds.npz
        train(load_competition(root / "competition.toml"), ["tiny"], [0], resume=False, stop_after_epoch=1, console=quiet())
    if name == "best.pt":
        (fold0 / name).write_bytes(b"\x80\x02 not a checkpoint")
    else:
        _truncate(fold0 / name)
    before = snapshot(root, "runs", "oof")
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--fold", "0", "--resume")
    assert_one_line_error(code, err, str(fold0 / name), "--fold 0` without --resume")
    assert snapshot(root, "runs", "oof") == before


@pytest.mark.parametrize(
    "content, needle",
    [
        ("id,fold\nimg_000001,0\nimg_000002,two\n", "row 3 has fold 'two'"),
        ("id,fold\nimg_000001,0\nimg_000002,1.5\n", "row 3 has fold '1.5'"),
        ("id,fold\nimg_000001,\n", "row 2 has an empty fold"),
        ("id,fold\n", "has a header but no rows"),
        ("", "file is empty"),
    ],
)
@pytest.mark.parametrize("command", ["calibrate", "train"])
def test_broken_folds_csv(trained, tmp_path, capsys, content, needle, command):
    root = clone(trained, tmp_path)
    path = root / "folds" / "folds.csv"
    path.write_text(content)
    before = snapshot(root, "oof", "runs")
    code, _, err = kit(root, capsys, command)
    assert_one_line_error(code, err, str(path), needle, "run `kit folds`")
    assert "another fold" not in err
    assert snapshot(root, "oof", "runs") == before


def test_read_only_folds_folder(trained, tmp_path, capsys, read_only):
    root = clone(trained, tmp_path)
    before = snapshot(root, "folds")
    read_only(root / "folds")
    code, _, err = kit(root, capsys, "folds")
    assert_one_line_error(code, err, str(root / "folds" / "folds.csv"), "cannot write here", "writable")
    assert snapshot(root, "folds") == before and not temp_files(root)


def test_folds_path_inside_a_file(trained, tmp_path, capsys):
    root = clone(trained, tmp_path)
    (root / "blocker").write_text("a file where a folder should be")
    config = root / "competition.toml"
    config.write_text(config.read_text().replace(str(root / "folds" / "folds.csv"), str(root / "blocker" / "folds.csv")))
    code, _, err = kit(root, capsys, "folds")
    assert_one_line_error(code, err, str(root / "blocker" / "folds.csv"), "is a file, not a folder")
    assert (root / "blocker").read_text() == "a file where a folder should be"


@pytest.mark.parametrize("folder", ["runs", "oof"])
def test_read_only_output_folder_stops_train_before_any_work(trained, tmp_path, capsys, read_only, folder):
    root = clone(trained, tmp_path)
    shutil.rmtree(root / "runs")
    before = snapshot(root, "oof")
    read_only(root / folder)
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--fold", "0")
    assert_one_line_error(code, err, str(root / folder), "cannot write here")
    assert not list((root / "runs").rglob("*")) and snapshot(root, "oof") == before
    assert not (root / "cache").exists()  # stopped before building the image cache


def test_disk_full_in_runs_keeps_earlier_outputs(trained, tmp_path, capsys, disk_full):
    root = clone(trained, tmp_path)
    before = snapshot(root, "oof", "runs/tiny/fold1", "runs/tiny/fold2")
    disk_full(root / "runs")
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--fold", "0")
    assert_one_line_error(code, err, str(root / "runs" / "tiny" / "fold0"), "no space left on the device")
    assert snapshot(root, "oof", "runs/tiny/fold1", "runs/tiny/fold2") == before
    assert not temp_files(root)


def test_disk_full_writing_folds_keeps_the_old_file(trained, tmp_path, capsys, disk_full):
    root = clone(trained, tmp_path)
    config = root / "competition.toml"
    config.write_text(config.read_text().replace("seed = 0\npath", "seed = 3\npath"))  # a new file would differ
    before = snapshot(root, "folds")
    disk_full(root / "folds")
    code, _, err = kit(root, capsys, "folds")
    assert_one_line_error(code, err, str(root / "folds" / "folds.csv"), "no space left")
    assert snapshot(root, "folds") == before and not temp_files(root)


def test_disk_full_while_building_the_cache_leaves_no_half_cache(trained, tmp_path, capsys, disk_full):
    root = clone(trained, tmp_path)
    before = snapshot(root, "runs", "oof")
    disk_full(root / "cache")
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--fold", "0")
    assert_one_line_error(code, err, str(root / "cache"), ".u8", "no space left")
    assert not [p for p in (root / "cache").rglob("*") if p.is_file()]
    assert snapshot(root, "runs", "oof") == before


def test_too_little_free_space_for_the_cache_is_said_before_decoding(trained, tmp_path, capsys, monkeypatch):
    root = clone(trained, tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    code, _, err = kit(root, capsys, "train", "--variant", "tiny", "--fold", "0")
    assert_one_line_error(code, err, str(root / "cache"), "needs 0.1 MiB", "paths.cache")
    assert not [p for p in (root / "cache").rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "failure, needle",
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left"),
        (PermissionError(errno.EACCES, "Permission denied"), "cannot write here"),
        (OSError(errno.EIO, "Input/output error"), "Input/output error"),
        (KitError("a bad row"), "a bad row"),
        (KeyboardInterrupt(), None),
    ],
)
def test_atomic_write_keeps_the_old_file_and_no_temp(tmp_path, failure, needle):
    path = tmp_path / "out" / "file.bin"
    atomic_write(path, lambda f: f.write(b"old contents"))

    def write(f):
        f.write(b"half of the new")
        raise failure

    expected = KeyboardInterrupt if isinstance(failure, KeyboardInterrupt) else KitError
    with pytest.raises(expected) as info:
        atomic_write(path, write)
    if needle:
        assert str(path) in str(info.value) or isinstance(failure, KitError)
        assert needle in str(info.value)
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]


def test_atomic_write_onto_a_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(KitError, match="is a folder"):
        atomic_write(tmp_path / "taken", lambda f: f.write(b"x"))
    assert (tmp_path / "taken").is_dir() and [p.name for p in tmp_path.iterdir()] == ["taken"]


# clean but misleading


def test_an_id_na_is_an_id_and_an_empty_id_is_named(tiny_competition, tmp_path, capsys):
    config = kaggle_copy(tiny_competition, tmp_path)
    data = tmp_path / "data"
    edit_csv(data / "train.csv", lambda f: f.loc.__setitem__((0, "id"), "NA"))
    (data / "train" / "img_000001.png").rename(data / "train" / "NA.png")
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert code == 0, err
    folds = pd.read_csv(tmp_path / "folds" / "folds.csv", dtype=str, keep_default_na=False)
    assert folds["id"].iloc[0] == "NA"
    edit_csv(data / "train.csv", lambda f: f.loc.__setitem__((3, "id"), ""))
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, str(data / "train.csv"), "row 5 has an empty id")


@pytest.mark.parametrize(
    "model, needle",
    [
        ('backbone = "no_such_net"\npretrained = false\n', "key 'backbone': unknown model 'no_such_net'"),
        ('backbone = "test_resnet"\npretrained = false\nweights = "/nowhere/w.pth"\n', "weights file not found"),
    ],
)
def test_model_messages_name_the_configured_models_folder(trained, tmp_path, capsys, model, needle):
    root = clone(trained, tmp_path)
    (root / "models" / "odd.toml").write_text(model + "image_size = 16\nepochs = 1\n")
    code, _, err = kit(root, capsys, "train", "--variant", "odd", "--fold", "0")
    assert_one_line_error(code, err, str(root / "models" / "odd.toml"), needle)
    assert "configs/models" not in err


@pytest.mark.subprocess
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    out = tmp_path / "synth"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit", "synth", str(out), "--n-train", "20000", "--n-test", "100", "--size", "64"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_to_default,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".synth.tmp-*/train/*.png")):  # the long part has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), err
    assert not out.exists() and not list(tmp_path.iterdir())  # no dataset and no temp folder left


def test_an_os_error_outside_the_kit_checks_is_one_line(tmp_path, capsys, monkeypatch):
    import kit.data.folds

    def fail(cfg, console=None):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "somewhere"))

    monkeypatch.setattr(kit.data.folds, "make_folds", fail)
    config = write_config(tmp_path, f'dir = "{tmp_path}"', "multi-class", [])
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, str(tmp_path / "somewhere"), "Permission denied")


# Stale test logits (issue 28, class 3): test images replaced after training are refused by blend and submit,
# as `kit train --resume` refuses them, with the fix in the line.

@pytest.mark.slow
def test_test_images_replaced_after_training_are_refused_by_blend_and_submit(tiny_competition, tmp_path, capsys):
    root = tmp_path / "w"  # trained here: the train data's fingerprint holds the folder, so a clone of `trained` is stale
    root.mkdir()
    shutil.copytree(tiny_competition.root / "data", root / "data")
    (root / "models").mkdir()
    (root / "models" / "tiny.toml").write_text(model_toml(TINY_VARIANT))
    data = f'source = "kaggle"\ndir = "{root / "data"}"\npatient_column = "patient_id"\nsolution_csv = "solution.csv"'
    config = write_config(root, data, "multi-class", ["tiny"])
    config.write_text(config.read_text().replace(str(REPO / "configs" / "models"), str(root / "models")))
    for command in (["folds"], ["train", "--variant", "tiny"], ["blend", "--name", "b1"]):
        code, _, err = kit(root, capsys, *command)
        assert code == 0, err
    b1 = root / "submissions" / "b1.csv"
    assert json.loads(b1.with_suffix(".json").read_text())["test_images_fingerprint"]
    tests = sorted((root / "data" / "test").glob("*.png"))
    for replaced in (tests[:1], tests):  # one image, then every image
        for k, png in enumerate(replaced):
            Image.fromarray(np.full((32, 32), (k * 7 + 3) % 256, np.uint8), mode="L").save(png)
        before = snapshot(root, "oof", "submissions")
        code, _, err = kit(root, capsys, "blend", "--name", "b2")
        assert_one_line_error(code, err, str(root / "oof" / "tiny.npz"), "other test images", "kit train --variant tiny")
        code, _, err = kit(root, capsys, "submit", b1, "-m", "stale", "--dry-run")
        assert_one_line_error(code, err, str(b1), "other test images", "kit blend --name b1")
        assert snapshot(root, "oof", "submissions") == before
