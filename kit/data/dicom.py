"""DICOM images (`.dcm`) to (H, W) uint8, as a radiologist's viewer shows them, through pydicom.

Applied in this order (docs/data.md says the same):
1. the stored values decoded (uncompressed, RLE, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000 and
   HTJ2K, through pydicom with pylibjpeg's libjpeg/openjpeg/rle plugins; any other transfer syntax is refused
   with one line naming the file and the syntax); color (RGB, YBR) becomes gray through ITU-R 601-2 luma;
2. the modality rescale: value * RescaleSlope + RescaleIntercept (or the Modality LUT when there is one);
3. the VOI: the first VOI LUT of VOILUTSequence when present, else the first WindowCenter/WindowWidth with
   VOILUTFunction LINEAR (the default), LINEAR_EXACT or SIGMOID (DICOM PS3.3 C.11.2.1.2), mapped onto 0..255;
   with neither, 8-bit unsigned values without rescale are kept as stored and anything else (12/16-bit, a
   rescale) is stretched from the image's own min..max to 0..255 (as 16-bit PNGs are);
4. MONOCHROME1 (high values dark) inverted: 255 - value.
The cache then resizes it like every other image. Multi-frame files (volumes, cine) are refused: a 3-D
volume is not one image.
"""

from __future__ import annotations

import numpy as np

from kit.errors import KitError

METADATA_KEYWORDS = ("ViewPosition", "PatientSex", "PatientAge", "BodyPartExamined", "Modality", "PatientID", "StudyDescription")


def _dataset(path: str, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KitError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc}); replace the file, "
                       'or set data.on_bad_image = "skip" to leave it out') from None


def _stored_pixels(ds, path: str) -> np.ndarray:
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise KitError(
                f"{path}: DICOM transfer syntax '{getattr(syntax, 'name', syntax)}' ({syntax}) is not one the kit decodes "
                "(uncompressed, RLE, JPEG, JPEG-LS, JPEG 2000, HTJ2K); convert the file, e.g. with `gdcmconv --raw`"
            )
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise KitError(f"{path}: DICOM file without pixel data; replace the file, or set data.on_bad_image = \"skip\"")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise KitError(f"{path}: a DICOM of {int(ds.NumberOfFrames)} frames (a volume or cine): the kit reads one image per file")
    try:
        return ds.pixel_array
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, KeyError, TypeError) as exc:
        raise KitError(f"{path}: cannot decode the DICOM pixels ({type(exc).__name__}: {' '.join(str(exc).split())}); replace the file") from None


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2: the window onto 0..1 (LINEAR, LINEAR_EXACT or SIGMOID)."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    width = max(width, 1.0)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0) if width > 1 else (values > center - 0.5).astype(np.float64)


def _first(value) -> float:
    return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)


def to_uint8(ds, stored: np.ndarray, path: str) -> np.ndarray:
    """Steps 2-4 of the module docstring on decoded pixels `stored`. Integer pixels go through a lookup table
    over their own range (each stored value's result computed once: the same numbers, one pass over the image)."""
    if stored.ndim == 3 and stored.shape[-1] == 3:  # RGB (pydicom has turned YBR into RGB)
        stored = stored.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if stored.ndim != 2:
        raise KitError(f"{path}: DICOM pixels of shape {stored.shape}; the kit reads one grayscale or color image per file")
    as_stored = stored.dtype == np.uint8 and not _rescaled(ds)
    if stored.dtype.kind in "iu" and stored.size and "ModalityLUTSequence" not in ds:
        low, high = int(stored.min()), int(stored.max())
        if stored.dtype.kind == "u":  # index by the value itself: no pass to subtract the minimum
            lut = np.zeros(high + 1, dtype=np.uint8)
            lut[low:] = _levels(ds, np.arange(low, high + 1, dtype=np.float64), as_stored, path)
            return lut[stored]
        lut = _levels(ds, np.arange(low, high + 1, dtype=np.float64), as_stored, path)
        return lut[stored.astype(np.int64) - low]
    return _levels(ds, stored.astype(np.float64), as_stored, path)


def _rescaled(ds) -> bool:
    return "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds


def _levels(ds, stored: np.ndarray, as_stored: bool, path: str) -> np.ndarray:
    """Stored values (float, any shape) to uint8: rescale, VOI (LUT or window) or stretch, MONOCHROME1 inverted.
    The stretch uses the values' own min..max: over an image's range of levels that is the image's own."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    values = apply_modality_lut(stored, ds).astype(np.float64) if _rescaled(ds) else stored
    if not np.isfinite(values).all():
        raise KitError(f"{path}: DICOM pixels hold NaN or infinite values; replace the file")
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        out = np.clip(apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float64) / (2**bits - 1), 0.0, 1.0)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
        out = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    elif as_stored:
        out = values / 255.0
    else:
        low, high = values.min(), values.max()
        out = np.zeros_like(values) if high == low else (values - low) / (high - low)
    image = np.rint(out * 255.0).astype(np.uint8)
    return 255 - image if photometric == "MONOCHROME1" else image


def read_dicom(path: str, max_pixels: int | None) -> np.ndarray:
    """(H, W) uint8 of one DICOM file; KitError naming the file when it cannot be read."""
    from kit.data.common import check_pixels

    ds = _dataset(path)
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_pixels((columns, rows), path, max_pixels)
    return to_uint8(ds, _stored_pixels(ds, path), path)


def dicom_metadata(paths: list[str]) -> list[str]:
    """The metadata keywords (view, sex, age, ...) the first files' headers carry: listed by `kit init` as left out."""
    present: list[str] = []
    for path in paths[:5]:
        try:
            ds = _dataset(path, stop_before_pixels=True)
        except KitError:
            continue
        present += [k for k in METADATA_KEYWORDS if k in ds and k not in present]
    return present
