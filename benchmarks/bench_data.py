"""Data foundation speed: the synthetic generator, open_source, the image cache and folds.

Targets: 10,000 synthetic images at 128 px well under a minute on 2 cores; open_source
without decoding an image; the cache build (decode + resize) feasible for 51k images.
Scale with KIT_BENCH_N (default 10,000 images: 8,300 train + 1,700 test).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from kit.config import CompetitionConfig, DataConfig, FoldsConfig, PathsConfig
from kit.data import cached_images, make_folds, open_source
from kit.data.synth import generate


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - start, 3)


def main() -> dict:
    n = int(os.environ.get("KIT_BENCH_N", "10000"))
    n_test = round(n * 0.17)
    n_train = n - n_test
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, synth_s = _timed(lambda: generate(root / "data", n_train=n_train, n_test=n_test, size=128, seed=0))
        cfg = CompetitionConfig(
            data=DataConfig(dir=root / "data", patient_column="patient_id"),
            folds=FoldsConfig(path=root / "folds.csv"),
            paths=PathsConfig(cache=root / "cache"),
            source_file=root / "bench.toml",
        )
        source, open_s = _timed(lambda: open_source(cfg))
        _, cache_same_s = _timed(lambda: cached_images(source.train, 128, cfg.paths.cache))
        _, cache_resize_s = _timed(lambda: cached_images(source.train, 64, cfg.paths.cache))
        _, cache_hit_s = _timed(lambda: cached_images(open_source(cfg).train, 128, cfg.paths.cache))
        _, folds_s = _timed(lambda: make_folds(cfg))
    result = {
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "synth_images": n,
        "synth_seconds_128px": synth_s,
        "synth_images_per_s": round(n / synth_s, 1),
        "open_source_seconds": open_s,
        "cache_build_128px_seconds": cache_same_s,
        "cache_build_128px_images_per_s": round(n_train / cache_same_s, 1),
        "cache_build_resize_to_64px_seconds": cache_resize_s,
        "cache_hit_seconds_incl_open_source": cache_hit_s,
        "folds_seconds": folds_s,
    }
    print(result)
    return result


if __name__ == "__main__":
    main()
