"""Image cache: every image decoded once, resized to a variant's size, kept as one uint8 memmap.

Training reads `(n, size, size)` uint8 rows from a memory-mapped file instead of decoding a
PNG per sample, which is what makes the loader fast. The file is keyed by the split's
fingerprint (CSV contents + image sizes and mtimes, or the npz's stamp) and the size, so a
changed source gives a new key and a rebuild. It is built in a temp file and renamed, and the
JSON sidecar (shape, fingerprint, ok mask) is written last: a half-built cache is never used.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kit.data.sources import Split, warn
from kit.errors import KitError
from kit.files import write_json
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


def _load_chunk(split: Split, start: int, stop: int, size: int, skip: bool) -> tuple[np.ndarray, list[int], list[str]]:
    out = np.zeros((stop - start, size, size), dtype=np.uint8)
    bad, reasons = [], []
    for k, i in enumerate(range(start, stop)):
        try:
            out[k] = resize_gray(split.read_image(i), size)
        except KitError as exc:
            if not skip:
                raise
            bad.append(i)
            reasons.append(str(exc))
    return out, bad, reasons


def _build(split: Split, size: int, data_path: Path, meta_path: Path, on_bad_image: str) -> None:
    """Decode, resize and write every image into a temp memmap, then rename it into place."""
    n = len(split)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)
    tmp = data_path.with_name(f".{data_path.name}.{os.getpid()}.tmp")
    skip = on_bad_image == "skip"
    bad: list[int] = []
    reasons: list[str] = []
    try:
        if n:
            target = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, size, size))
            starts = list(range(0, n, _CHUNK))
            workers = min(4, os.cpu_count() or 1)
            with make_progress() as progress, ThreadPoolExecutor(max_workers=workers) as pool:
                task = progress.add_task(f"cache {split.name} {size}px", total=n)
                futures = [pool.submit(_load_chunk, split, s, min(s + _CHUNK, n), size, skip) for s in starts]
                for s, future in zip(starts, futures):
                    try:
                        chunk, chunk_bad, chunk_reasons = future.result()
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
                    target[s : s + len(chunk)] = chunk
                    bad += chunk_bad
                    reasons += chunk_reasons
                    progress.advance(task, len(chunk))
            target.flush()
            del target
        else:
            tmp.write_bytes(b"")
        os.replace(tmp, data_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if bad:
        warn(f"{len(bad)} {split.name} images could not be read and are skipped (ok=False): {'; '.join(reasons[:3])}")
    write_json(
        meta_path,
        {
            "version": CACHE_VERSION,
            "fingerprint": split.fingerprint,
            "shape": [n, size, size],
            "split": split.name,
            "bad": bad,
        },
    )
