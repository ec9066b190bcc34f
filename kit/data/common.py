"""What every layout reader returns: a DataSource of two Splits, and the image decoding they share.

Images are returned as (H, W) uint8 grayscale. 8-bit files are read as they are (color through
ITU-R 601-2 luma); deeper ones (16-bit PNG, 32-bit or float TIFF) are stretched from their own
min..max to 0..255, because X-rays stored in 16 bits often use only 10-12 of them: scaling by the
bit depth would make them nearly black (and PIL's convert("L") clips them to solid white). An image
of one constant value becomes all zeros.

Missing images: with `data.on_bad_image = "skip"` a reader keeps the rows and marks them in
`Split.missing`; `read_image` raises for them and the cache stores them as zeros with `ok=False`, so
a trainer drops them explicitly instead of training on a wrong label.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.markup import escape

from kit.errors import KitError
from kit.hashing import digest

MAX_LISTED = 5


def warn(message: str) -> None:
    """A warning line on stderr (the kit's warnings are for the user, not for `warnings` filters)."""
    Console(stderr=True).print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)  # a '[x]' in a file name is text


def first_items(items, n: int = MAX_LISTED) -> str:
    """The first `n` items joined by commas, and how many more there are (for one-line errors)."""
    items = [str(x) for x in items]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def fingerprint(*parts: bytes | str) -> str:
    """sha256 of the parts, each closed by a NUL (so ("ab", "c") and ("a", "bc") differ)."""
    return digest(*parts)


class ArrayImages(Protocol):
    """Images held in an array (a MedMNIST npz): (H, W) uint8 grayscale by row index."""

    shape: tuple[int, ...]

    def __getitem__(self, index: int) -> np.ndarray: ...


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
    npz_images: ArrayImages | None = field(default=None, repr=False)
    images_fingerprint: str = ""  # the images' names, sizes and mtimes (or the npz's), wherever the folder lies
    max_pixels: int | None = None  # data.max_image_pixels: larger images are refused before they are decoded

    def __len__(self) -> int:
        return len(self.ids)

    def read_image(self, i: int) -> np.ndarray:
        """(H, W) uint8 grayscale; KitError naming the file when it is missing or unreadable."""
        if self.npz_images is not None:
            return self.npz_images[i]
        path = str(self.paths[i])
        if self.missing is not None and self.missing[i]:
            raise KitError(f"{path}: image file is missing ({self.name} id '{self.ids[i]}')")
        if path[-4:].lower() == ".dcm":
            from kit.data.dicom import read_dicom  # pydicom only where there is DICOM

            return read_dicom(path, self.max_pixels)
        try:
            with warnings.catch_warnings():  # PIL's own bomb warning: the kit's limit below says it in one line
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as img:  # reads the header only: the size is known before any decoding
                    check_pixels(img.size, path, self.max_pixels)
                    return gray_uint8(img, path)
        except Image.DecompressionBombError:
            raise KitError(f"{path}: the image is too large to decode safely (Pillow refuses it as a decompression bomb); "
                           "shrink or replace the file") from None
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise KitError(
                f"{path}: cannot read image ({type(exc).__name__}: {exc}); replace the file, "
                'or set data.on_bad_image = "skip" to leave it out'
            ) from None


def check_pixels(size: tuple[int, int], path: str, limit: int | None) -> None:
    width, height = size
    if limit is not None and width * height > limit:
        raise KitError(
            f"{path}: {width}x{height} = {width * height} pixels, more than data.max_image_pixels = {limit} (a decompression "
            "bomb, or a scan far larger than training needs); shrink the image, or raise data.max_image_pixels"
        )


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
