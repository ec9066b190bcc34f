"""Layouts real competitions use, each on a small folder written here: `kit init` then `kit folds` at the first
try (class folders, images over several folders, deep folders, TIFF, DICOM, labels in another CSV with another
id column name, a metadata test.csv); the ambiguous ones stop with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.config import load_competition
from kit.data import open_source
from kit.data.folds import assign_folds, fold_class_counts
from kit.errors import KitError
from kit.stages.init import SEEDS
from tests.conftest import assert_one_line_error, run_kit


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the written config's folds/, oof/, runs/ paths are relative


def init_and_folds(tmp_path: Path, data: Path, capsys) -> tuple[str, object]:
    config = tmp_path / "cfg.toml"
    code, out, err = run_kit(["init", data, "--output", config], capsys)
    assert code == 0, err
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert code == 0, err
    return " ".join(out.split()), load_competition(config)


def png(path: Path, value: int = 0, size: int = 8, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).convert(mode).save(path)


@pytest.mark.parametrize("deeper", [False, True])
def test_class_folders_without_a_train_csv(tmp_path, capsys, deeper):
    """train/<Class Name>/<file>.png (or one level deeper), test/<file>.png, a sample `file,species`: the classes
    are the folder names, the test ids the sample's."""
    classes = ["Black-grass", "Charlock", "Common Chickweed"]
    data = tmp_path / "seedlings"
    top = data / "train" / "train" if deeper else data / "train"
    for k, name in enumerate(classes):
        for i in range(5 + k):
            png(top / name / f"{name[:2]}{i:03d}.png", value=40 * k)
    test_ids = [f"t{i:03d}.png" for i in range(4)]
    for i in test_ids:
        png(data / "test" / i)
    pd.DataFrame({"file": test_ids, "species": "Charlock"}).to_csv(data / "sample_submission.csv", index=False)
    out, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.data.train_csv is None
    assert cfg.data.train_images == ("train/train" if deeper else "train") + "/{label}/{id}"
    assert (cfg.data.id_column, cfg.data.test_images, cfg.task) == ("file", "test/{id}", "multi-class")
    source = open_source(cfg)
    assert source.classes == classes
    assert source.train.labels.sum(axis=0).tolist() == [5, 6, 7]
    assert source.train.read_image(int(np.flatnonzero(source.train.labels[:, 2])[0])).max() == 80  # the folder's class
    assert cfg.folds.n_folds == 5 and "class folders" in (tmp_path / "cfg.toml").read_text()


def test_class_folders_with_a_one_hot_sample_keep_the_sample_order(tmp_path, capsys):
    data = tmp_path / "comp"
    for name in ("b", "a"):
        for i in range(6):
            png(data / "train" / name / f"{name}{i}.jpg")
    png(data / "test" / "x1.jpg")
    pd.DataFrame({"id": ["x1"], "b": 0, "a": 0}).to_csv(data / "sample_submission.csv", index=False)
    _, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.data.train_images == "train/{label}/{id}.jpg"
    assert open_source(cfg).classes == ["b", "a"]


def test_images_over_several_folders_as_a_glob_and_as_a_list(tmp_path, capsys):
    """NIH as published: Data_Entry_2017.csv over images_001/images/ .. images_003/images/ (test images among them)."""
    data = tmp_path / "nih"
    data.mkdir()
    n = 45
    pool = ["No Finding", "Effusion", "Mass", "Effusion|Mass"]
    entry = pd.DataFrame({
        "Image Index": [f"{i:08d}_000.png" for i in range(n)], "Finding Labels": [pool[i % 4] for i in range(n)],
        "Patient ID": [i for i in range(n)], "View Position": "PA",
    })
    entry.to_csv(data / "Data_Entry_2017.csv", index=False)
    test_ids = [f"{90000000 + i}_000.png" for i in range(6)]
    pd.DataFrame({"Image Index": test_ids, "Effusion": 0, "Mass": 0}).to_csv(data / "sample_submission.csv", index=False)
    for k, i in enumerate([*entry["Image Index"], *test_ids]):
        (data / f"images_{k % 3 + 1:03d}" / "images").mkdir(parents=True, exist_ok=True)
        (data / f"images_{k % 3 + 1:03d}" / "images" / i).touch()
    out, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.data.train_images == cfg.data.test_images == "images_*/images/{id}"
    assert cfg.data.train_csv == "Data_Entry_2017.csv" and cfg.data.none_label == "No Finding"
    paths = open_source(cfg).train.paths
    assert paths[4].endswith("images_002/images/00000004_000.png") and paths[5].endswith("images_003/images/00000005_000.png")
    # a folder the glob does not describe (another name): the folders are listed
    (data / "images_003").rename(data / "more")
    (tmp_path / "cfg.toml").unlink()
    _, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.data.train_images == ["images_001/images/{id}", "images_002/images/{id}", "more/images/{id}"]
    assert len(open_source(cfg).train) == n


def test_deep_folders_other_id_name_metadata_test_csv_and_a_label_duplicate(tmp_path, capsys):
    """SIIM-ISIC's shape: jpeg/train/<id>.JPG (two folders down, upper-case suffix), train.csv with image_name, a
    sample with image_id, a test.csv of metadata, benign_malignant a text copy of the target."""
    rng = np.random.default_rng(3)
    data = tmp_path / "isic"
    n = 40
    target = (np.arange(n) % 4 == 0).astype(int)
    train = pd.DataFrame({
        "image_name": [f"ISIC_{i:07d}" for i in range(n)], "patient_id": [f"IP_{i // 2:07d}" for i in range(n)],
        "sex": rng.choice(["male", "female"], n), "age_approx": rng.integers(20, 80, n),
        "benign_malignant": np.where(target == 1, "malignant", "benign"), "target": target,
    })
    test_ids = [f"ISIC_{9000000 + i:07d}" for i in range(5)]
    data.mkdir()
    train.to_csv(data / "train.csv", index=False)
    pd.DataFrame({"image_id": test_ids, "target": 0}).to_csv(data / "sample_submission.csv", index=False)
    pd.DataFrame({"image_id": test_ids, "sex": "male", "age_approx": 50}).to_csv(data / "test.csv", index=False)
    for split, ids in (("train", train["image_name"]), ("test", test_ids)):
        for i in ids:
            png(data / "jpeg" / split / f"{i}.JPG", mode="RGB")
    out, cfg = init_and_folds(tmp_path, data, capsys)
    assert (cfg.data.id_column, cfg.data.train_id_column) == ("image_id", "image_name")
    assert (cfg.data.train_images, cfg.data.test_images) == ("jpeg/train/{id}.JPG", "jpeg/test/{id}.JPG")
    assert cfg.data.patient_column == "patient_id" and cfg.data.label_column == "target"
    text = (tmp_path / "cfg.toml").read_text()
    assert "# Columns left out of training: sex, age_approx, benign_malignant (duplicates the label)" in text
    assert "(test metadata)" in out and "test.csv" in out
    source = open_source(cfg)
    assert source.train.ids[0] == "ISIC_0000000" and source.train.labels[:, 1].sum() == target.sum()


def test_tiff_images_with_labels_in_train_labels_csv(tmp_path, capsys):
    """Histopathologic Cancer Detection: train/<hex id>.tif, train_labels.csv id,label, sample id,label."""
    data = tmp_path / "histo"
    rng = np.random.default_rng(0)
    ids = [f"{rng.integers(16**8):08x}{k:032x}" for k in range(30)]
    data.mkdir()
    pd.DataFrame({"id": ids, "label": [k % 2 for k in range(30)]}).to_csv(data / "train_labels.csv", index=False)
    test_ids = [f"{k:040x}" for k in range(3)]
    pd.DataFrame({"id": test_ids, "label": 0}).to_csv(data / "sample_submission.csv", index=False)
    for k, i in enumerate(ids):
        png(data / "train" / f"{i}.tif", value=k, mode="RGB")
    for i in test_ids:
        png(data / "test" / f"{i}.tif", mode="RGB")
    _, cfg = init_and_folds(tmp_path, data, capsys)
    assert (cfg.data.train_csv, cfg.data.train_images) == ("train_labels.csv", "train/{id}.tif")
    source = open_source(cfg)
    assert source.classes == ["0", "1"] and source.train.read_image(7).max() == 7


# --- DICOM --------------------------------------------------------------------------------------------------------


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", **elements) -> Path:
    """A DICOM file of `pixels` (uint8 or uint16), with extra data elements (RescaleSlope, WindowCenter, ...)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    bits = pixels.dtype.itemsize * 8
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = pixels.tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def read(path: Path) -> np.ndarray:
    from kit.data.dicom import read_dicom

    return read_dicom(str(path), None)


def test_dicom_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    assert (read(write_dicom(tmp_path / "m2.dcm", eight)) == eight).all()  # 8-bit, no window: as stored
    assert (read(write_dicom(tmp_path / "m1.dcm", eight, photometric="MONOCHROME1")) == 255 - eight).all()

    sixteen = rng.integers(300, 3800, (6, 5)).astype(np.uint16)  # 12 bits used of 16: stretched from its own min..max
    stretched = np.rint((sixteen - sixteen.min()) * 255.0 / (sixteen.max() - sixteen.min())).astype(np.uint8)
    assert (read(write_dicom(tmp_path / "s16.dcm", sixteen)) == stretched).all()
    assert (read(write_dicom(tmp_path / "s16m1.dcm", sixteen, photometric="MONOCHROME1")) == 255 - stretched).all()

    # rescale to Hounsfield units, then a window given in them (DICOM's linear window: c - 0.5, w - 1)
    slope, intercept, center, width = 2.0, -1024.0, 2000.0, 3000.0
    hu = sixteen * slope + intercept
    windowed = np.clip((hu - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    path = write_dicom(tmp_path / "ct.dcm", sixteen, RescaleSlope=slope, RescaleIntercept=intercept, WindowCenter=center, WindowWidth=width)
    assert (read(path) == np.rint(windowed * 255).astype(np.uint8)).all()
    assert {0, 255} < set(np.unique(read(path)).tolist())  # the window clips both ends, and keeps values between

    # a rescale without a window: the rescaled values stretched (a negative intercept cannot wrap around)
    path = write_dicom(tmp_path / "r.dcm", eight, RescaleSlope=-1.0, RescaleIntercept=0.0)
    assert (read(path) == 255 - np.rint((eight - eight.min()) * 255.0 / (eight.max() - eight.min())).astype(np.uint8)).all()


def test_compressed_dicom_decodes_like_the_uncompressed_one(tmp_path):
    import pydicom
    from pydicom.uid import JPEG2000Lossless, RLELossless

    pixels = np.random.default_rng(1).integers(0, 4096, (64, 64)).astype(np.uint16)
    plain = write_dicom(tmp_path / "plain.dcm", pixels, WindowCenter=2000.0, WindowWidth=3000.0)
    for syntax in (RLELossless, JPEG2000Lossless):
        ds = pydicom.dcmread(plain)
        ds.compress(syntax)
        ds.save_as(tmp_path / f"{syntax.name[:4]}.dcm")
        assert (read(tmp_path / f"{syntax.name[:4]}.dcm") == read(plain)).all()


def test_unsupported_transfer_syntax_is_refused_naming_file_and_syntax(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate

    path = write_dicom(tmp_path / "xl.dcm", np.zeros((4, 4), dtype=np.uint8))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    ds.PixelData = encapsulate([b"\0\1\2\3"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    with pytest.raises(KitError) as info:
        read(path)
    assert str(path) in str(info.value) and "1.2.840.10008.1.2.4.100" in str(info.value) and "MPEG2" in str(info.value)


def test_rsna_layout_of_dicom_files_with_a_row_per_box(tmp_path, capsys):
    """stage_2_train_images/<patientId>.dcm, stage_2_train_labels.csv with one row per box (a patient repeats with
    the same Target), sample patientId,Target; the DICOM metadata (view, sex, age) listed and left out."""
    data = tmp_path / "rsna"
    rng = np.random.default_rng(2)
    ids = [f"{k:08x}-aaaa-bbbb-cccc-{k:012x}" for k in range(24)]
    rows = []
    for k, i in enumerate(ids):
        for _ in range(2 if k % 3 == 0 else 1):
            rows.append({"patientId": i, "x": 10.0 if k % 3 == 0 else None, "y": None, "width": None, "height": None, "Target": int(k % 3 == 0)})
    data.mkdir()
    pd.DataFrame(rows).to_csv(data / "stage_2_train_labels.csv", index=False)
    test_ids = [f"{k:08x}-dddd-eeee-ffff-{k:012x}" for k in range(3)]
    pd.DataFrame({"patientId": test_ids, "Target": 0}).to_csv(data / "stage_2_sample_submission.csv", index=False)
    for folder, names in (("stage_2_train_images", ids), ("stage_2_test_images", test_ids)):
        for i in names:
            write_dicom(data / folder / f"{i}.dcm", rng.integers(0, 4096, (8, 8)).astype(np.uint16), ViewPosition="PA", PatientSex="F", PatientAge="051Y")
    out, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.data.train_images == "stage_2_train_images/{id}.dcm" and cfg.data.repeated_ids == "same_label"
    assert "left out of training: x, y, width, height, ViewPosition (DICOM), PatientSex (DICOM), PatientAge (DICOM)" in (tmp_path / "cfg.toml").read_text()
    source = open_source(cfg)
    assert len(source.train) == 24 and source.train.labels[:, 1].sum() == 8
    image = source.train.read_image(0)
    assert image.dtype == np.uint8 and image.max() == 255 and image.min() == 0


# --- ambiguous: one line -------------------------------------------------------------------------------------------


def test_an_id_in_two_of_several_folders_stops(tmp_path, capsys):
    data = tmp_path / "comp"
    data.mkdir()
    pd.DataFrame({"id": [f"a{i}" for i in range(10)], "label": ["x", "y"] * 5}).to_csv(data / "train.csv", index=False)
    pd.DataFrame({"id": ["t0"], "label": "x"}).to_csv(data / "sample_submission.csv", index=False)
    for i in range(10):
        png(data / f"part_{i % 2}" / f"a{i}.png")
    png(data / "part_1" / "a0.png")
    png(data / "test" / "t0.png")
    code, _, err = run_kit(["init", data, "--output", tmp_path / "cfg.toml"], capsys)
    assert_one_line_error(code, err, "'a0'", "two folders", "data.train_images")
    # the reader says the same when the config lists both folders
    config = tmp_path / "cfg.toml"
    config.write_text(f'task = "multi-class"\n[data]\ndir = "{data}"\nlabel_column = "label"\ntrain_images = "part_*/{{id}}.png"\n')
    code, _, err = run_kit(["--config", config, "folds"], capsys)
    assert_one_line_error(code, err, "'a0'", "two folders")


# --- folds: the split `kit folds` runs -----------------------------------------------------------------------------


def test_init_writes_the_fold_count_the_real_split_achieves(tmp_path, capsys):
    """Every class has 5 patients, yet the grouped split with 5 (and 4) folds leaves one out of a held-out fold:
    init writes the largest K whose split does not, and `kit folds` then runs at the first try."""
    rng = np.random.default_rng(11)  # one such draw (a search over seeds found it; the test checks the property itself)
    n_pat = int(rng.integers(8, 20))
    groups = np.repeat([f"p{i}" for i in range(n_pat)], rng.integers(1, 12, n_pat))
    labels = np.zeros((len(groups), 3), np.uint8)
    labels[np.arange(len(groups)), rng.integers(0, 2, len(groups))] = 1
    for p in rng.choice(n_pat, 5, replace=False):
        first = np.flatnonzero(groups == f"p{p}")[0]
        labels[first] = [0, 0, 1]
    data = tmp_path / "comp"
    data.mkdir()
    ids = [f"i{k}" for k in range(len(groups))]
    frame = pd.DataFrame({"id": ids, "A": labels[:, 0], "B": labels[:, 1], "C": labels[:, 2], "PatientID": groups})
    frame.to_csv(data / "train.csv", index=False)
    pd.DataFrame({"id": ["t"], "A": 0, "B": 0, "C": 0}).to_csv(data / "sample_submission.csv", index=False)
    for i in [*ids, "t"]:
        (data / "images").mkdir(exist_ok=True)
        (data / "images" / f"{i}.png").touch()
    _, cfg = init_and_folds(tmp_path, data, capsys)
    k, seed = cfg.folds.n_folds, cfg.folds.seed
    assert k < 5
    fold = assign_folds(labels, groups, k, seed, "multi-class")
    assert (fold_class_counts(labels, fold, k) > 0).all()
    for larger in range(k + 1, 6):
        assert all((fold_class_counts(labels, assign_folds(labels, groups, larger, s, "multi-class"), larger) == 0).any() for s in SEEDS)


def test_the_stacker_combines_two_classes():
    """A binary competition (Histopathologic, RSNA): sklearn's two-class regression gives one log-odds column;
    the stacker still returns a log-probability per class."""
    from kit.config import BlendConfig
    from kit.ensemble.stack import fit_stacker

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    labels = np.eye(2, dtype=np.uint8)[y]
    zs = [np.log(np.clip(np.eye(2)[y] * 0.6 + 0.2 + rng.normal(0, 0.1, (200, 2)), 0.01, 1)).astype(np.float32)]
    out = fit_stacker(zs, labels, "multi-class", BlendConfig()).combine(zs)
    assert out.shape == (200, 2)
    assert np.allclose(np.exp(out).sum(axis=1), 1, atol=1e-4)
    assert (out.argmax(axis=1) == y).mean() > 0.8


def test_dicom_voi_lut_sequence_is_applied(tmp_path):
    """A VOI LUT (VOILUTSequence) maps each stored value through its table, scaled by the table's bits to 0..255."""
    from pydicom.dataset import Dataset

    stored = np.arange(20, dtype=np.uint16).reshape(4, 5) + 100
    table = (np.arange(20) * 200).astype(np.uint16)  # 12-bit output, first input value 100
    item = Dataset()
    item.add_new(0x00283002, "US", [20, 100, 12])  # LUTDescriptor: entries, first stored value mapped, bits
    item.add_new(0x00283006, "US", table.tolist())  # LUTData
    path = write_dicom(tmp_path / "lut.dcm", stored, VOILUTSequence=[item])
    expected = np.rint(table[stored - 100] / 4095 * 255).astype(np.uint8)
    assert (read(path) == expected).all()


def test_a_train_csv_of_every_image_leaves_the_test_ids_out(tmp_path, capsys):
    """NIH's Data_Entry_2017.csv lists every image, the test ones too: those rows are not trained on."""
    data = tmp_path / "nih"
    data.mkdir()
    ids = [f"{i:08d}_000.png" for i in range(30)]
    pool = ["No Finding", "Effusion", "Mass"]
    pd.DataFrame({"Image Index": ids, "Finding Labels": [pool[i % 3] for i in range(30)]}).to_csv(data / "Data_Entry_2017.csv", index=False)
    pd.DataFrame({"Image Index": ids[:4], "Effusion": 0, "Mass": 0}).to_csv(data / "sample_submission.csv", index=False)
    (data / "images").mkdir()
    for i in ids:
        (data / "images" / i).touch()
    _, cfg = init_and_folds(tmp_path, data, capsys)
    assert cfg.data.drop_test_ids is True
    source = open_source(cfg)
    assert len(source.train) == 26 and not set(source.train.ids) & set(source.test.ids)
