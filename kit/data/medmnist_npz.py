"""The MedMNIST layout: one npz with train/val/test images and labels (val joins train).

Only the arrays' headers are read when the source is opened (a 100k-image npz opens in a blink);
the images are loaded on first use.
"""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config import CompetitionConfig
from kit.data.common import DataSource, Split, fingerprint, first_items
from kit.errors import KitError
from kit.files import read_npz

CHESTMNIST_CLASSES = [
    "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia",
]
NPZ_SPLITS = ("train", "val", "test")
_NPZ_REMEDY = "re-download the file, or run `kit synth DIR --task multi-label` for a synthetic stand-in"


class NpzImages:
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


class ConcatImages:
    """train + val of an npz seen as one split."""

    def __init__(self, parts: list[NpzImages]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [p.shape[0] for p in parts])
        self.shape = (int(self.offsets[-1]), *parts[0].shape[1:])

    def __getitem__(self, index: int) -> np.ndarray:
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[k][index - int(self.offsets[k])]


def _npy_header(zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array in an npz without loading it (open_source stays fast)."""
    with zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return tuple(shape), dtype


def _checked_shape(zf: zipfile.ZipFile, path: Path, split: str, kind: str, present: set[str]) -> tuple[int, ...] | None:
    """The shape of `<split>_<kind>` after checking its dtype and rank; None for an optional key that is absent."""
    key = f"{split}_{kind}"
    if key not in present:
        if (split == "test" and kind == "labels") or split == "val":
            return None
        raise KitError(f"{path}: missing key '{key}' (found: {first_items(sorted(present), 8)}); expected the MedMNIST keys")
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
    return shape


def npz_classes_and_shapes(path: Path) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    """Class names (ChestMNIST's for 14 columns) and the shape of every key, from the headers alone."""
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
                shape = _checked_shape(zf, path, split, kind, present)
                if shape is not None:
                    shapes[f"{split}_{kind}"] = shape
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


def open_medmnist(cfg: CompetitionConfig, data_dir: Path) -> DataSource:
    """The npz's train (+ val) and test splits; ids are `<split>_<row>`."""
    path = data_dir / cfg.data.npz
    classes, shapes = npz_classes_and_shapes(path)
    st = path.stat()
    stamp = f"{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}"
    arrays = read_npz(path, _NPZ_REMEDY, keys=["synthetic", "train_labels", "val_labels"])
    synthetic = "synthetic" in arrays
    label_parts = [arrays[f"{s}_labels"] for s in ("train", "val") if f"{s}_images" in shapes]
    if len(classes) == 1:  # (N, 1) class indices (multi-class MedMNIST sets): as many classes as the largest index
        classes = [f"class_{k}" for k in range(int(max(int(np.max(y, initial=0)) for y in label_parts)) + 1)]
    labels = np.concatenate([npz_labels(y, len(classes), cfg.task, path) for y in label_parts]).astype(np.uint8)
    if cfg.task == "multi-class" and (labels.sum(axis=1) != 1).any():
        raise KitError(f"{path}: {int((labels.sum(axis=1) != 1).sum())} train rows do not have exactly one label; set task = \"multi-label\"")

    train_parts = [s for s in ("train", "val") if f"{s}_images" in shapes]
    ids = np.concatenate([[f"{s}_{i:05d}" for i in range(shapes[f"{s}_images"][0])] for s in train_parts]).astype(str)
    readers = [NpzImages(path, f"{s}_images", shapes[f"{s}_images"]) for s in train_parts]
    train_images = readers[0] if len(readers) == 1 else ConcatImages(readers)
    images = fingerprint("npz images", f"{st.st_size}\t{st.st_mtime_ns}")
    train = Split(ids, labels, None, fingerprint("npz", "train", stamp), name="train", npz_images=train_images, images_fingerprint=images)
    n_test = shapes["test_images"][0]
    test_ids = np.array([f"test_{i:05d}" for i in range(n_test)], dtype=str)
    test = Split(test_ids, None, None, fingerprint("npz", "test", stamp), name="test",
                 npz_images=NpzImages(path, "test_images", shapes["test_images"]), images_fingerprint=images)
    return DataSource(list(classes), cfg.task, train, test, synthetic=synthetic)


def medmnist_test_labels(cfg: CompetitionConfig) -> pd.DataFrame | None:
    """The npz's test labels as id + class columns, or None when it has none."""
    path = Path(cfg.data.dir) / cfg.data.npz
    classes, _ = npz_classes_and_shapes(path)
    arrays = read_npz(path, _NPZ_REMEDY, keys=["test_labels"])
    if "test_labels" not in arrays:
        return None
    labels = arrays["test_labels"]
    if len(classes) == 1:
        classes = open_medmnist(cfg, Path(cfg.data.dir)).classes
    labels = npz_labels(labels, len(classes), cfg.task, path)
    frame = pd.DataFrame(labels, columns=classes)
    frame.insert(0, "id", [f"test_{i:05d}" for i in range(len(labels))])
    return frame


def npz_labels(y: np.ndarray, n_classes: int, task: str, path: Path) -> np.ndarray:
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
