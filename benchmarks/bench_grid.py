"""The demo's variant × fold grid on local Ray with 2 workers against the sequential executor, one run.

The demo: `kit synth` data (KIT_BENCH_GRID_N_TRAIN train images, default 5000 as in `make demo`,
test set 0.34 of that, 128 px), KIT_BENCH_GRID_FOLDS folds (default 5), the demo variants of
configs/competition.toml (or KIT_BENCH_GRID_VARIANTS). Sequential:
one job after another in this process with torch's default threads (all cores). Ray: a private
local instance, 2 jobs at once with 1 core (1 torch thread) each. The image caches are built
before either is timed. Ray's start-up is timed on its own and included in the Ray total. Both
OOF files are scored under the closed-form rule (they differ in the last bits: CPU float sums depend
on the thread count). Ratio = sequential wall-clock / Ray wall-clock (> 1: Ray is faster).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console

from kit.config import CompetitionConfig, DataConfig, FoldsConfig, PathsConfig, load_competition, load_model
from kit.data.cache import cached_images
from kit.data.folds import make_folds
from kit.data.sources import open_source
from kit.data.synth import generate
from kit.stages.train import train


def _oof_scores(oof_dir: Path, variants: list[str]) -> dict[str, float]:
    out = {}
    for name in variants:
        meta = json.loads((oof_dir / f"{name}.json").read_text())
        out[name] = round(meta["oof_metrics_closed_form_rule"]["score"], 4)
    return out


def main() -> dict:
    import ray

    from kit.executors.ray import connect

    n_train = int(os.environ.get("KIT_BENCH_GRID_N_TRAIN", "5000"))
    n_folds = int(os.environ.get("KIT_BENCH_GRID_FOLDS", "5"))
    repo_cfg = load_competition("configs/competition.toml")
    variants = os.environ.get("KIT_BENCH_GRID_VARIANTS", ",".join(repo_cfg.variants)).split(",")
    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "data", n_train=n_train, n_test=round(n_train * 0.34), size=128, seed=42)
        base = CompetitionConfig(
            variants=variants, data=DataConfig(dir=root / "data", patient_column="patient_id", solution_csv="solution.csv"),
            folds=FoldsConfig(n_folds=n_folds, path=root / "folds.csv"), paths=PathsConfig(cache=root / "cache", models=repo_cfg.paths.models.resolve()),
            source_file=root / "bench.toml",
        )
        make_folds(base, console=quiet)
        source = open_source(base)
        for size in {load_model(v, base).image_size for v in variants}:
            for split in (source.train, source.test):
                cached_images(split, size, base.paths.cache)
        runs = {}
        for executor in ("local", "ray"):
            cfg = base.model_copy(update={"paths": base.paths.model_copy(update={"runs": root / executor / "runs", "oof": root / executor / "oof"})})
            startup = 0.0
            if executor == "ray":
                start = time.perf_counter()
                connect(None, log_to_driver=False)
                startup = time.perf_counter() - start
            start = time.perf_counter()
            train(cfg, variants, None, resume=False, console=quiet, executor=executor, cpus_per_job=1 if executor == "ray" else None)
            seconds = time.perf_counter() - start + startup
            if executor == "ray":
                ray.shutdown()
            runs[executor] = {"seconds": round(seconds, 1), "startup_seconds": round(startup, 1), "oof_scores": _oof_scores(cfg.paths.oof, variants)}
            print(f"{executor}: {runs[executor]}", flush=True)
    result = {
        "n_train": n_train, "variants": variants, "folds": n_folds, "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "sequential": runs["local"], "ray_2_workers": runs["ray"],
        "ratio_sequential_over_ray_wall_clock": round(runs["local"]["seconds"] / runs["ray"]["seconds"], 3),
    }
    print(result)
    return result


if __name__ == "__main__":
    main()
