"""Data sources behind one small interface: ids, an (n, C) label array, class names, an image reader.

Two layouts are read: (a) the Kaggle competition layout (train.csv one-hot or with a label
column, image folders, test.csv or sample_submission.csv) and (b) a MedMNIST npz.
`open_source` checks everything it can without decoding an image (labels, duplicate ids,
sample_submission columns, image files present) so a bad dataset fails in a second with one
line, not an hour into training. Images are decoded later, once, by `kit.data.cache`.

Images are returned as (H, W) uint8 grayscale. 8-bit files are read as they are (color through
ITU-R 601-2 luma); deeper ones (16-bit PNG, 32-bit or float TIFF) are stretched from their own
min..max to 0..255, because X-rays stored in 16 bits often use only 10-12 of them: scaling by the
bit depth would make them nearly black (and PIL's convert("L") clips them to solid white). An image
of one constant value becomes all zeros.

Missing images: with `data.on_bad_image = "stop"` (default) `open_source` raises KitError
listing them. With `"skip"` it prints a warning listing them and keeps the rows; `Split.missing`
marks them, `read_image` raises for them and the cache stores them as zeros with `ok=False`, so
a trainer drops them explicitly instead of training on a wrong label.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from rich.console import Console

from kit.config import CompetitionConfig
from kit.errors import KitError
from kit.files import read_csv, read_npz

CHESTMNIST_CLASSES = [
    "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia",
]
NPZ_SPLITS = ("train", "val", "test")
_NPZ_REMEDY = "re-download the file, or run `kit synth DIR --task multi-label` for a synthetic stand-in"
_MAX_LISTED = 5


def warn(message: str) -> None:
    """A warning line on stderr (the kit's warnings are for the user, not for `warnings` filters)."""
    Console(stderr=True).print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def _first(items, n: int = _MAX_LISTED) -> str:
    items = [str(x) for x in items]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


class _NpzImages:
    """Images of one npz key, loaded on first use (open_source stays fast); grayscale on read."""

    def __init__(self, path: Path, key: str, shape: tuple[int, ...]):
        self.path, self.key, self.shape = path, key, shape
        self._array: np.ndarray | None = None
        self._lock = threading.Lock()

    def array(self) -> np.ndarray:
        with self._lock:
            if self._array is None:
                arrays = read_npz(self.path, _NPZ_REMEDY, keys=[self.key])
                if self.key not in arrays:
                    raise KitError(f"{self.path}: key '{self.key}' is gone (the file changed while in use); run the command again")
                self._array = arrays[self.key]
            return self._array

    def __getitem__(self, index: int) -> np.ndarray:
        img = self.array()[index]
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        elif img.ndim == 3 and img.shape[-1] == 3:  # ITU-R 601-2 luma, in PIL's convert("L") fixed point
            rgb = img.astype(np.uint32)
            img = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
        return np.ascontiguousarray(img, dtype=np.uint8)


@dataclass(frozen=True, eq=False)
class Split:
    """One split (train or test): ids, labels, patient groups and a way to read each image."""

    ids: np.ndarray  # (n,) str
    labels: np.ndarray | None  # (n, C) uint8 indicator; None when unknown (test)
    groups: np.ndarray | None  # (n,) str patient ids, or None
    fingerprint: str  # changes whenever the underlying files/arrays change (cache key)
    name: str = "train"
    paths: np.ndarray | None = None  # (n,) image file per row (Kaggle layout)
    missing: np.ndarray | None = None  # (n,) bool: image file absent at load (on_bad_image="skip")
    npz_images: _NpzImages | None = field(default=None, repr=False)
    images_fingerprint: str = ""  # the images' names, sizes and mtimes (or the npz's), wherever the folder lies

    def __len__(self) -> int:
        return len(self.ids)

    def read_image(self, i: int) -> np.ndarray:
        """(H, W) uint8 grayscale; KitError naming the file when it is missing or unreadable."""
        if self.npz_images is not None:
            return self.npz_images[i]
        path = str(self.paths[i])
        if self.missing is not None and self.missing[i]:
            raise KitError(f"{path}: image file is missing ({self.name} id '{self.ids[i]}')")
        try:
            with Image.open(path) as img:
                return gray_uint8(img, path)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise KitError(
                f"{path}: cannot read image ({type(exc).__name__}: {exc}); replace the file, "
                'or set data.on_bad_image = "skip" to leave it out'
            ) from None

    @property
    def n_missing(self) -> int:
        return 0 if self.missing is None else int(self.missing.sum())


def gray_uint8(img: Image.Image, path: str) -> np.ndarray:
    """(H, W) uint8: 8-bit modes through PIL's luma conversion, deeper ones (I;16, I, F) stretched
    from the image's own min..max (a constant image gives zeros)."""
    if img.mode not in ("F", "I") and not img.mode.startswith("I;"):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    values = np.asarray(img).astype(np.float64)
    if values.ndim != 2:
        raise KitError(f"{path}: a {img.mode} image of shape {values.shape}; expected one grayscale plane")
    if not np.isfinite(values).all():
        raise KitError(f"{path}: image has NaN or infinite pixel values; replace the file, or set data.on_bad_image = \"skip\"")
    low, high = values.min(), values.max()
    if high == low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class DataSource:
    """A competition's data: class names, task and the two splits."""

    classes: list[str]
    task: str  # "multi-class" | "multi-label"
    train: Split
    test: Split
    synthetic: bool  # True for data made by `kit synth` (submit refuses it without --dry-run)


    def train_labels_for(self, ids: np.ndarray, origin: str | Path) -> np.ndarray:
        """(n, C) uint8 training labels in the order of `ids` (an OOF's rows); KitError naming `origin`
        when an id is not in the training data or the split has no labels."""
        if self.train.labels is None:
            raise KitError(f"{origin}: the training split has no labels; calibration and blending need them")
        row_of = {i: r for r, i in enumerate(np.asarray(self.train.ids, dtype=str).tolist())}
        ids = np.asarray(ids, dtype=str).tolist()
        missing = [i for i in ids if i not in row_of]
        if missing:
            raise KitError(
                f"{origin}: {len(missing)} OOF ids are not in the training data (e.g. {missing[:3]}); "
                "the data changed after training: retrain on the current data"
            )
        return np.asarray(self.train.labels, dtype=np.uint8)[[row_of[i] for i in ids]]


def open_source(cfg: CompetitionConfig) -> DataSource:
    """Open and check the configured data (no image decoding); KitError with one line on bad input."""
    data_dir = Path(cfg.data.dir)
    if not data_dir.is_dir():
        how = (
            f"place chestmnist.npz there, or run `kit synth {data_dir} --task multi-label` for a synthetic stand-in"
            if cfg.data.source == "medmnist"
            else "run `make synth` for the synthetic benchmark, `kit download` for the competition, or point data.dir at the folder you placed"
        )
        raise KitError(f"{cfg.source_file}: data.dir = '{data_dir}' does not exist; {how}")
    if cfg.data.source == "medmnist":
        return _open_medmnist(cfg, data_dir)
    return _open_kaggle(cfg, data_dir)


def test_labels(cfg: CompetitionConfig) -> pd.DataFrame | None:
    """The test labels where they are known (synthetic solution.csv, MedMNIST test_labels): id + class columns."""
    data_dir = Path(cfg.data.dir)
    if cfg.data.source == "medmnist":
        path = data_dir / cfg.data.npz
        classes, _ = _npz_classes_and_shapes(path)
        arrays = read_npz(path, _NPZ_REMEDY, keys=["test_labels"])
        if "test_labels" not in arrays:
            return None
        labels = arrays["test_labels"]
        if len(classes) == 1:
            classes = open_source(cfg).classes
        labels = _npz_labels(labels, len(classes), cfg.task, path)
        frame = pd.DataFrame(labels, columns=classes)
        frame.insert(0, "id", [f"test_{i:05d}" for i in range(len(labels))])
        return frame
    if not cfg.data.solution_csv:
        return None
    path = data_dir / cfg.data.solution_csv
    if not path.is_file():
        return None
    frame = _read_csv(path, cfg.data.id_column, cfg, "solution_csv")
    indicator = [c for c in frame.columns if c != cfg.data.id_column and frame[c].dtype.kind in "iub"]
    if indicator and frame[indicator].isin([0, 1]).all().all():  # one-hot columns as uint8 (n, C) indicators
        frame[indicator] = frame[indicator].astype(np.uint8)
    return frame


test_labels.__test__ = False  # a data function, not a pytest test


# Kaggle layout


def _read_csv(path: Path, id_column: str, cfg: CompetitionConfig, key: str) -> pd.DataFrame:
    """One of the competition's CSVs (ids as strings, "NA" an id like any other), with an id column and rows."""
    remedy = f"restore it from the competition download, or set data.{key} in {cfg.source_file}"
    frame = read_csv(path, id_column, remedy)
    if id_column not in frame.columns:
        raise KitError(
            f"{path}: no id column '{id_column}' (columns: {_first(frame.columns, 8)}); set data.id_column in {cfg.source_file}"
        )
    return frame


def _check_unique_ids(ids: np.ndarray, path: Path) -> None:
    values, counts = np.unique(ids, return_counts=True)
    dup = values[counts > 1]
    if len(dup):
        raise KitError(f"{path}: {len(dup)} duplicate ids ({_first(dup)}); each image must appear once")


def _labels_from_columns(frame: pd.DataFrame, classes: list[str], path: Path, cfg: CompetitionConfig) -> np.ndarray:
    absent = [c for c in classes if c not in frame.columns]
    if absent:
        raise KitError(f"{path}: class columns not found: {_first(absent)}; fix data.class_columns in {cfg.source_file}")
    values = frame[classes].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad_rows = ~np.isin(values, (0.0, 1.0)).all(axis=1)
    if bad_rows.any():
        ids = frame[cfg.data.id_column].to_numpy()[bad_rows]
        raise KitError(
            f"{path}: {int(bad_rows.sum())} rows have class values other than 0/1 (first ids: {_first(ids)}); "
            "class columns must be one-hot 0/1"
        )
    return values.astype(np.uint8)


def _labels_from_label_column(
    frame: pd.DataFrame, column: str, task: str, path: Path, cfg: CompetitionConfig, classes: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    if column not in frame.columns:
        raise KitError(f"{path}: no label column '{column}'; fix data.label_column in {cfg.source_file}")
    raw = frame[column].fillna("").astype(str).to_numpy()
    split = [[p.strip() for p in v.split("|") if p.strip()] if task == "multi-label" else ([v.strip()] if v.strip() else []) for v in raw]
    if classes is None:
        classes = sorted({name for names in split for name in names})
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted({name for names in split for name in names if name not in index})
    if unknown:
        raise KitError(f"{path}: column '{column}' has labels that are not classes: {_first(unknown)}")
    labels = np.zeros((len(raw), len(classes)), dtype=np.uint8)
    for row, names in enumerate(split):
        labels[row, [index[n] for n in names]] = 1
    return labels, classes


def _sample_class_columns(cfg: CompetitionConfig, data_dir: Path) -> list[str] | None:
    """Class columns of sample_submission when it has them (more than one non-id column), else None."""
    path = data_dir / cfg.data.sample_submission
    if not path.is_file():
        return None
    header = _read_csv(path, cfg.data.id_column, cfg, "sample_submission").columns
    rest = [c for c in header if c != cfg.data.id_column]
    return rest if len(rest) > 1 else None


def _image_paths(data_dir: Path, pattern: str, ids: np.ndarray, cfg: CompetitionConfig, key: str) -> np.ndarray:
    try:
        return np.array([str(data_dir / pattern.format(id=i)) for i in ids], dtype=object)
    except (KeyError, IndexError, ValueError) as exc:
        raise KitError(f"{cfg.source_file}: data.{key} = '{pattern}' is not a valid pattern ({exc}); use e.g. 'train/{{id}}.png'") from None


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


def _fingerprint(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _check_missing(missing: np.ndarray, paths: np.ndarray, split: str, cfg: CompetitionConfig, key: str) -> None:
    if not missing.any():
        return
    n = int(missing.sum())
    listed = _first(paths[missing])
    if cfg.data.on_bad_image == "stop":
        raise KitError(
            f"{n} of {len(paths)} {split} images are missing ({listed}); check data.{key} in {cfg.source_file}, "
            'or set data.on_bad_image = "skip" to leave them out'
        )
    warn(f"{n} of {len(paths)} {split} images are missing and will be skipped: {listed}")


def _open_kaggle(cfg: CompetitionConfig, data_dir: Path) -> DataSource:
    d = cfg.data
    train_path = data_dir / d.train_csv
    train = _read_csv(train_path, d.id_column, cfg, "train_csv")
    train_ids = train[d.id_column].astype(str).to_numpy(dtype=str)
    _check_unique_ids(train_ids, train_path)

    sample_classes = _sample_class_columns(cfg, data_dir)
    patient = d.patient_column if d.patient_column and d.patient_column in train.columns else None
    if d.label_column is not None:
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
            f"only in sample_submission: {_first(only_sample) or 'none'}; only in train: {_first(only_train) or 'none'}"
        )
    if cfg.task == "multi-class":
        active = labels.sum(axis=1)
        for bad, what in ((active == 0, "no active label"), (active > 1, "several active labels")):
            if bad.any():
                raise KitError(
                    f"{train_path}: {int(bad.sum())} rows have {what} (first ids: {_first(train_ids[bad])}); "
                    'task is "multi-class": each row needs exactly one class'
                )
    groups = None
    if patient:  # an empty patient id is its own group, not one giant group of all empty ones
        empty = train[patient].isna().to_numpy()
        groups = train[patient].astype(str).to_numpy(dtype=object)
        groups[empty] = [f"(no patient, row {k + 2})" for k in np.flatnonzero(empty)]
        groups = groups.astype(str)

    test_path = data_dir / d.test_csv
    test = _read_csv(test_path, d.id_column, cfg, "test_csv")
    test_ids = test[d.id_column].astype(str).to_numpy(dtype=str)
    _check_unique_ids(test_ids, test_path)

    splits = {}
    for name, ids, pattern, key, csv_path, y, g in (
        ("train", train_ids, d.train_images, "train_images", train_path, labels, groups),
        ("test", test_ids, d.test_images, "test_images", test_path, None, None),
    ):
        paths = _image_paths(data_dir, pattern, ids, cfg, key)
        missing, stat_lines = _stat_images(paths)
        _check_missing(missing, paths, name, cfg, key)
        fingerprint = _fingerprint("kaggle", name, csv_path.read_bytes(), "\n".join(stat_lines))
        prefix = len(str(data_dir)) + 1  # the same images in a moved or copied (mtime-keeping) folder keep their fingerprint
        images = _fingerprint("images", "\n".join(line[prefix:] for line in stat_lines))
        splits[name] = Split(
            ids, y, g, fingerprint, name=name, paths=paths, missing=missing if missing.any() else None, images_fingerprint=images
        )
    return DataSource(classes, cfg.task, splits["train"], splits["test"], synthetic=(data_dir / "SYNTHETIC").exists())


# MedMNIST npz


def _npy_header(zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array in an npz without loading it (open_source stays fast)."""
    with zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return tuple(shape), dtype


def _npz_classes_and_shapes(path: Path) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    if not path.is_file():
        raise KitError(f"{path}: npz file not found; set data.npz, or run `kit synth DIR --task multi-label`")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise KitError(f"{path}: not a readable npz archive ({exc}); {_NPZ_REMEDY}") from None
    with zf:
        present = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        shapes = {}
        for split in NPZ_SPLITS:
            for kind in ("images", "labels"):
                key = f"{split}_{kind}"
                if key not in present:
                    if split == "test" and kind == "labels":
                        continue
                    if split == "val":
                        continue
                    raise KitError(f"{path}: missing key '{key}' (found: {_first(sorted(present), 8)}); expected the MedMNIST keys")
                try:
                    shape, dtype = _npy_header(zf, key)
                except Exception as exc:  # a damaged member raises BadZipFile, ValueError, EOFError, ...
                    raise KitError(f"{path}: key '{key}' is unreadable, the file is truncated or corrupt ({type(exc).__name__}); {_NPZ_REMEDY}") from None
                if kind == "images":
                    ok = dtype == np.uint8 and (len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3)))
                    expect = "uint8 (N, H, W), (N, H, W, 1) or (N, H, W, 3)"
                else:
                    ok = len(shape) in (1, 2) and dtype.kind in "iub"
                    expect = "integer (N, C)"
                if not ok:
                    raise KitError(f"{path}: key '{key}' has shape {shape} and dtype {dtype}; expected {expect}")
                if shape[0] == 0 and split != "val":
                    raise KitError(f"{path}: key '{key}' has 0 rows; the {split} set would be empty: {_NPZ_REMEDY}")
                shapes[key] = shape
    for split in NPZ_SPLITS:
        if f"{split}_labels" in shapes and shapes[f"{split}_labels"][0] != shapes[f"{split}_images"][0]:
            raise KitError(
                f"{path}: key '{split}_labels' has {shapes[f'{split}_labels'][0]} rows but '{split}_images' has {shapes[f'{split}_images'][0]}"
            )
    n_classes = {s[1] if len(s) == 2 else 1 for k, s in shapes.items() if k.endswith("_labels")}
    if len(n_classes) != 1:
        raise KitError(f"{path}: the label keys disagree on the number of classes ({sorted(n_classes)})")
    c = n_classes.pop()
    classes = CHESTMNIST_CLASSES if c == len(CHESTMNIST_CLASSES) else [f"class_{k}" for k in range(c)]
    return classes, shapes


def _open_medmnist(cfg: CompetitionConfig, data_dir: Path) -> DataSource:
    path = data_dir / cfg.data.npz
    classes, shapes = _npz_classes_and_shapes(path)
    st = path.stat()
    stamp = f"{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}"
    arrays = read_npz(path, _NPZ_REMEDY, keys=["synthetic", "train_labels", "val_labels"])
    synthetic = "synthetic" in arrays
    label_parts = [arrays[f"{s}_labels"] for s in ("train", "val") if f"{s}_images" in shapes]
    if len(classes) == 1:  # (N, 1) class indices (multi-class MedMNIST sets): as many classes as the largest index
        classes = [f"class_{k}" for k in range(int(max(int(np.max(y, initial=0)) for y in label_parts)) + 1)]
    labels = np.concatenate([_npz_labels(y, len(classes), cfg.task, path) for y in label_parts]).astype(np.uint8)
    if cfg.task == "multi-class" and (labels.sum(axis=1) != 1).any():
        raise KitError(f"{path}: {int((labels.sum(axis=1) != 1).sum())} train rows do not have exactly one label; set task = \"multi-label\"")

    train_parts = [s for s in ("train", "val") if f"{s}_images" in shapes]
    ids = np.concatenate([[f"{s}_{i:05d}" for i in range(shapes[f"{s}_images"][0])] for s in train_parts]).astype(str)
    readers = [_NpzImages(path, f"{s}_images", shapes[f"{s}_images"]) for s in train_parts]
    train_images = readers[0] if len(readers) == 1 else _ConcatImages(readers)
    images = _fingerprint("npz images", f"{st.st_size}\t{st.st_mtime_ns}")
    train = Split(ids, labels, None, _fingerprint("npz", "train", stamp), name="train", npz_images=train_images, images_fingerprint=images)
    n_test = shapes["test_images"][0]
    test_ids = np.array([f"test_{i:05d}" for i in range(n_test)], dtype=str)
    test = Split(test_ids, None, None, _fingerprint("npz", "test", stamp), name="test",
                 npz_images=_NpzImages(path, "test_images", shapes["test_images"]), images_fingerprint=images)
    return DataSource(list(classes), cfg.task, train, test, synthetic=synthetic)


def _npz_labels(y: np.ndarray, n_classes: int, task: str, path: Path) -> np.ndarray:
    """MedMNIST multi-class labels are (N, 1) class indices; multi-label ones (N, C) indicators."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == n_classes and n_classes > 1:
        if not np.isin(y, (0, 1)).all():
            raise KitError(f"{path}: label arrays must hold 0/1 indicators")
        return y
    idx = y.reshape(-1).astype(np.int64)
    if (idx < 0).any() or (idx >= max(n_classes, 1)).any():
        raise KitError(f"{path}: class index labels out of range")
    return np.eye(n_classes, dtype=np.uint8)[idx]


class _ConcatImages:
    """train + val of an npz seen as one split."""

    def __init__(self, parts: list[_NpzImages]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [p.shape[0] for p in parts])
        self.shape = (int(self.offsets[-1]), *parts[0].shape[1:])

    def __getitem__(self, index: int) -> np.ndarray:
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[k][index - int(self.offsets[k])]
