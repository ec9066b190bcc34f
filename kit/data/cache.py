"""Image cache: every image decoded once, resized to a variant's size, kept as one uint8 memmap.

Training reads `(n, size, size)` uint8 rows from a memory-mapped file instead of decoding a
PNG per sample, which is what makes the loader fast. The file is keyed by the split's
fingerprint (CSV contents + image sizes and mtimes, or the npz's stamp) and the size, so a
changed source gives a new key and a rebuild. It is written in order through `atomic_write` (temp
file, then rename) and the JSON sidecar (shape, fingerprint, ok mask) is written last: a half-built
cache is never used, and a full disk ends the build with one line (checked before decoding, when the
free space is already too small) and no temp file left. Images that are not square are stretched
to the square size; the build says so once.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kit.data.common import Split, warn
from kit.errors import KitError
from kit.files import atomic_write, ensure_writable_dir, write_json
from kit.progress import make_progress

CACHE_VERSION = 1
_CHUNK = 64


@dataclass(frozen=True, eq=False)
class CachedImages:
    images: np.ndarray  # (n, size, size) uint8, a read-only np.memmap
    ok: np.ndarray  # (n,) bool, False where the image was unreadable and on_bad_image="skip" (row is zeros)


def cache_paths(split: Split, size: int, cache_dir: Path) -> tuple[Path, Path]:
    """The data file and its JSON sidecar for this split and size."""
    stem = f"{split.fingerprint[:20]}_{size}"
    return Path(cache_dir) / f"{stem}.u8", Path(cache_dir) / f"{stem}.json"


def resize_gray(img: np.ndarray, size: int) -> np.ndarray:
    """Square uint8 image of `size`; untouched (pixel-exact) when it already is that size."""
    if img.shape == (size, size):
        return img
    pil = Image.fromarray(img, mode="L") if img.dtype == np.uint8 else Image.fromarray(img.astype(np.uint8))
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def cached_images(split: Split, size: int, cache_dir: Path, on_bad_image: str = "stop") -> CachedImages:
    """Open the cache for (split, size), building it first when absent or stale."""
    data_path, meta_path = cache_paths(split, size, cache_dir)
    meta = _read_meta(meta_path)
    n = len(split)
    expected = {"version": CACHE_VERSION, "fingerprint": split.fingerprint, "shape": [n, size, size]}
    valid = (
        meta is not None
        and all(meta.get(k) == v for k, v in expected.items())
        and data_path.is_file()
        and data_path.stat().st_size == n * size * size
    )
    if not valid:
        _build(split, size, data_path, meta_path, on_bad_image)
        meta = _read_meta(meta_path)
    ok = np.ones(n, dtype=bool)
    ok[np.asarray(meta.get("bad", []), dtype=np.int64)] = False
    if not ok.all() and on_bad_image == "stop":
        first = split.paths[~ok][:5] if split.paths is not None else split.ids[~ok][:5]
        raise KitError(
            f"{data_path}: {int((~ok).sum())} {split.name} images were unreadable when the cache was built "
            f"({', '.join(map(str, first))}); fix them, or set data.on_bad_image = \"skip\""
        )
    if n == 0:
        return CachedImages(np.zeros((0, size, size), dtype=np.uint8), ok)
    images = np.memmap(data_path, dtype=np.uint8, mode="r", shape=(n, size, size))
    return CachedImages(images, ok)


def _read_meta(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class _BuildLog:
    """What the build met on the way: unreadable images (skipped) and stretched ones (not square)."""

    bad: list[int]
    reasons: list[str]
    stretched: list[tuple[int, tuple[int, int]]]  # (row, (height, width))


def _load_chunk(split: Split, start: int, stop: int, size: int, skip: bool) -> tuple[np.ndarray, _BuildLog]:
    out = np.zeros((stop - start, size, size), dtype=np.uint8)
    log = _BuildLog([], [], [])
    for k, i in enumerate(range(start, stop)):
        try:
            img = split.read_image(i)
        except KitError as exc:
            if not skip:
                raise
            log.bad.append(i)
            log.reasons.append(str(exc))
            continue
        if img.shape[0] != img.shape[1]:
            log.stretched.append((i, img.shape))
        out[k] = resize_gray(img, size)
    return out, log


def _check_free_space(folder: Path, needed: int, data_path: Path) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise KitError(
            f"{data_path}: the image cache needs {needed / 2**20:.1f} MiB but {folder} has {free / 2**20:.1f} MiB free; "
            "free some space or set paths.cache to a folder on a larger disk"
        )


def _build(split: Split, size: int, data_path: Path, meta_path: Path, on_bad_image: str) -> None:
    """Decode, resize and write every image, in order, into a temp file that is then renamed into place."""
    n = len(split)
    ensure_writable_dir(data_path.parent)
    _check_free_space(data_path.parent, n * size * size, data_path)
    skip = on_bad_image == "skip"
    log = _BuildLog([], [], [])

    def write(f) -> None:
        if not n:
            return
        starts = list(range(0, n, _CHUNK))
        workers = min(4, os.cpu_count() or 1)
        with make_progress() as progress, ThreadPoolExecutor(max_workers=workers) as pool:
            task = progress.add_task(f"cache {split.name} {size}px", total=n)
            futures = [pool.submit(_load_chunk, split, s, min(s + _CHUNK, n), size, skip) for s in starts]
            try:
                for future in futures:
                    chunk, chunk_log = future.result()
                    f.write(chunk.tobytes())
                    log.bad += chunk_log.bad
                    log.reasons += chunk_log.reasons
                    log.stretched += chunk_log.stretched
                    progress.advance(task, len(chunk))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    atomic_write(data_path, write)
    if log.bad:
        warn(f"{len(log.bad)} {split.name} images could not be read and are skipped (ok=False): {'; '.join(log.reasons[:3])}")
    if log.stretched:
        row, (height, width) = log.stretched[0]
        example = split.paths[row] if split.paths is not None else split.ids[row]
        warn(
            f"{len(log.stretched)} of {n} {split.name} images are not square (e.g. {example}: {width}x{height}); "
            f"they are stretched to {size}x{size}, the aspect ratio is not kept"
        )
    write_json(
        meta_path,
        {
            "version": CACHE_VERSION,
            "fingerprint": split.fingerprint,
            "shape": [n, size, size],
            "split": split.name,
            "bad": log.bad,
            "stretched": len(log.stretched),
        },
    )
