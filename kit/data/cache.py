"""Image cache: every image decoded once, resized to a variant's size, kept as one uint8 memmap.

Training reads `(n, size, size)` uint8 rows from a memory-mapped file instead of decoding a
PNG per sample, which is what makes the loader fast. The file is keyed by the split's
fingerprint (CSV contents + image sizes and mtimes, or the npz's stamp) and the size, so a
changed source gives a new key and a rebuild. Images are decoded by `data.workers` processes (default:
every core) and their rows appended in order to `<file>.partial`, with `<file>.progress` saying how many
rows are in it; the complete file is renamed into place and its JSON sidecar (shape, fingerprint, ok
mask) written last, so a half-built cache is never used. An interrupted build (Ctrl-C, a killed
process) resumes from the rows already written; the bytes are the same as an uninterrupted build's. A
full disk ends the build with one line (checked before decoding, when the free space is already too
small) and no partial file left. Images that are not square are stretched to the square size; the
build says so once.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from kit.data.common import Split, warn
from kit.errors import KitError
from kit.files import _umask, ensure_writable_dir, write_error, write_json
from kit.progress import RateColumn, make_progress

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


def cached_images(split: Split, size: int, cache_dir: Path, on_bad_image: str = "stop", workers: int | None = None) -> CachedImages:
    """Open the cache for (split, size), building it first (on `workers` processes, default every core) when absent or stale."""
    data_path, meta_path = cache_paths(split, size, cache_dir)
    n = len(split)
    meta = _valid_meta(split, size, data_path, meta_path)
    if meta is None:
        with _build_lock(data_path):  # two commands building the same cache: one builds, the other then reads it
            meta = _valid_meta(split, size, data_path, meta_path)
            if meta is None:
                _build(split, size, data_path, meta_path, on_bad_image, workers)
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


def _valid_meta(split: Split, size: int, data_path: Path, meta_path: Path) -> dict | None:
    """The sidecar of a complete cache of this very split and size, else None."""
    meta = _read_meta(meta_path)
    n = len(split)
    expected = {"version": CACHE_VERSION, "fingerprint": split.fingerprint, "shape": [n, size, size]}
    valid = (
        meta is not None
        and all(meta.get(k) == v for k, v in expected.items())
        and data_path.is_file()
        and data_path.stat().st_size == n * size * size
    )
    return meta if valid else None


def _build_lock(data_path: Path) -> FileLock:
    """A lock per cache file, kept in the temp folder (the cache folder holds only caches)."""
    key = hashlib.sha256(str(Path(data_path).resolve()).encode()).hexdigest()[:20]
    return FileLock(os.path.join(tempfile.gettempdir(), f"kit-cache-{key}.lock"))


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

    def add(self, other: _BuildLog) -> None:
        self.bad += other.bad
        self.reasons = (self.reasons + other.reasons)[:3]
        self.stretched += other.stretched


_WORKER_SPLIT: Split | None = None  # the split a build's worker process decodes (set before the fork)


def _load_chunk(split: Split | None, start: int, stop: int, size: int, skip: bool) -> tuple[np.ndarray, _BuildLog]:
    split = split if split is not None else _WORKER_SPLIT
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


def build_workers(split: Split, workers: int | None) -> int:
    """Processes for a build: `data.workers`, default every core; one for an npz (its rows are already decoded)."""
    if split.paths is None or multiprocessing.current_process().daemon:  # a daemonic process may not start processes
        return 1
    return max(1, workers or os.cpu_count() or 1)


def _chunks(split: Split, starts: list[int], size: int, skip: bool, workers: int) -> Iterator[tuple[np.ndarray, _BuildLog]]:
    """Each chunk's rows in order: decoded here (one worker), or by `workers` forked processes, at most
    two chunks per worker ahead of the writer (memory stays bounded)."""
    n = len(split)
    if workers == 1 or len(starts) == 1:
        for s in starts:
            yield _load_chunk(split, s, min(s + _CHUNK, n), size, skip)
        return
    global _WORKER_SPLIT
    _WORKER_SPLIT = split  # inherited by the forked workers: the split is not pickled per chunk
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        pending: deque = deque()
        for s in starts:
            pending.append(pool.submit(_load_chunk, None, s, min(s + _CHUNK, n), size, skip))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _WORKER_SPLIT = None


def _partial_paths(data_path: Path) -> tuple[Path, Path]:
    """The rows written so far and what they hold: kept when a build is interrupted, so the next one resumes."""
    return data_path.with_name(data_path.name + ".partial"), data_path.with_name(data_path.name + ".progress")


def _resume_point(split: Split, size: int, partial: Path, progress: Path) -> tuple[int, _BuildLog]:
    """Rows already in `partial` from an interrupted build of this very split and size (0 when none)."""
    state = _read_meta(progress)
    row = size * size
    if (
        state is None
        or state.get("version") != CACHE_VERSION
        or state.get("fingerprint") != split.fingerprint
        or state.get("shape") != [len(split), size, size]
        or not partial.is_file()
    ):
        return 0, _BuildLog([], [], [])
    done = min(int(state.get("done", 0)), partial.stat().st_size // row)
    log = _BuildLog([b for b in state.get("bad", []) if b < done], state.get("reasons", [])[:3],
                    [(r, tuple(hw)) for r, *hw in state.get("stretched", []) if r < done])
    return done, log


def _build(split: Split, size: int, data_path: Path, meta_path: Path, on_bad_image: str, workers: int | None = None) -> None:
    """Decode, resize and append every image, in order, to a partial file that is renamed into place when
    complete; an interrupted build (Ctrl-C, a killed process) resumes from the rows the progress file records."""
    n = len(split)
    ensure_writable_dir(data_path.parent)
    partial, progress_path = _partial_paths(data_path)
    done, log = _resume_point(split, size, partial, progress_path)
    _check_free_space(data_path.parent, (n - done) * size * size, data_path)
    skip = on_bad_image == "skip"
    n_workers = build_workers(split, workers)
    state = {"version": CACHE_VERSION, "fingerprint": split.fingerprint, "shape": [n, size, size]}
    try:
        if done:
            f = open(partial, "r+b")  # noqa: SIM115 (closed below, after the rows are flushed)
            f.truncate(done * size * size)
            f.seek(done * size * size)
        else:
            fd, tmp = tempfile.mkstemp(dir=data_path.parent, prefix=f".{data_path.name}.", suffix=".tmp")
            os.replace(tmp, partial)
            f = os.fdopen(fd, "wb")
        with f, make_progress(None, RateColumn("images"), refresh_per_second=2) as bar:
            task = bar.add_task(f"cache {split.name} {size}px" + (f" ({n_workers} workers)" if n_workers > 1 else ""), total=n, completed=done)
            for chunk, chunk_log in _chunks(split, list(range(done, n, _CHUNK)), size, skip, n_workers):
                f.write(chunk.tobytes())
                f.flush()
                done += len(chunk)
                log.add(chunk_log)
                stretched = [[r, *hw] for r, hw in log.stretched[:1]] + [[r, 0, 0] for r, _ in log.stretched[1:]]
                write_json(progress_path, {**state, "done": done, "bad": log.bad, "reasons": log.reasons, "stretched": stretched})
                bar.advance(task, len(chunk))
            os.fsync(f.fileno())
        os.chmod(partial, 0o666 & ~_umask())
        os.replace(partial, data_path)
    except OSError as exc:
        _remove_quietly(partial, progress_path)
        raise write_error(data_path, exc) from None
    except KitError:
        _remove_quietly(partial, progress_path)  # a bad image: the fix changes the fingerprint, these rows would be stale
        raise
    _remove_quietly(progress_path)
    _report(split, size, log)
    write_json(meta_path, {**state, "split": split.name, "bad": log.bad, "stretched": len(log.stretched)})


def _remove_quietly(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass


def _report(split: Split, size: int, log: _BuildLog) -> None:
    n = len(split)
    if log.bad:
        warn(f"{len(log.bad)} {split.name} images could not be read and are skipped (ok=False): {'; '.join(log.reasons[:3])}")
    if log.stretched:
        row, (height, width) = log.stretched[0]
        example = split.paths[row] if split.paths is not None else split.ids[row]
        warn(
            f"{len(log.stretched)} of {n} {split.name} images are not square (e.g. {example}: {width}x{height}); "
            f"they are stretched to {size}x{size}, the aspect ratio is not kept"
        )
