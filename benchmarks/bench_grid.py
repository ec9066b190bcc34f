"""The demo's variant × fold grid on local Ray with 2 workers against the sequential executor, one run.

The demo: `kit synth` data (KIT_BENCH_GRID_N_TRAIN train images, default 5000 as in `make demo`,
test set 0.34 of that, 128 px), KIT_BENCH_GRID_FOLDS folds (default 5), the demo variants of
configs/competition.toml (or KIT_BENCH_GRID_VARIANTS). Sequential:
one job after another in this process with torch's default threads (all cores). Ray: a private
local instance, 2 jobs at once with 1 core (1 torch thread) each. The image caches are built
before either is timed. Ray's start-up is timed on its own and included in the Ray total. Also
sequential with one torch thread (`--cpus-per-job 1`, the same per-job setting as the Ray jobs,
whose OOF bytes then equal Ray's). Every OOF is scored under the closed-form rule. Ratios =
sequential wall-clock / Ray wall-clock (> 1: Ray is faster). KIT_BENCH_GRID_RUNS picks the runs
(default sequential,sequential_1_thread,ray).

Measured here (2 shared CPU cores, other jobs running; 1200 train images, 5 folds, the 3 demo
variants): run 1: sequential (2 threads) 655 s, Ray 102 s (5 s of it start-up), ratio 6.4, load
average 3.1; run 2: sequential with 1 thread 149 s, Ray 104 s, ratio 1.43, the same OOF scores
(-4.7264, -4.1969, -4.5415) for both. Most of run 1's gap is torch's 2 threads fighting the other
processes for 2 busy cores, not Ray: prefer --cpus-per-job 1 on a shared CPU machine.
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
        for run in os.environ.get("KIT_BENCH_GRID_RUNS", "sequential,sequential_1_thread,ray").split(","):
            executor = "ray" if run == "ray" else "local"
            cpus_per_job = None if run == "sequential" else 1
            cfg = base.model_copy(update={"paths": base.paths.model_copy(update={"runs": root / run / "runs", "oof": root / run / "oof"})})
            startup = 0.0
            if executor == "ray":
                start = time.perf_counter()
                connect(None, log_to_driver=False)
                startup = time.perf_counter() - start
            start = time.perf_counter()
            train(cfg, variants, None, resume=False, console=quiet, executor=executor, cpus_per_job=cpus_per_job)
            seconds = time.perf_counter() - start + startup
            if executor == "ray":
                ray.shutdown()
            runs[run] = {
                "seconds": round(seconds, 1), "startup_seconds": round(startup, 1), "load_average_1min_after": round(os.getloadavg()[0], 2),
                "oof_scores": _oof_scores(cfg.paths.oof, variants),
            }
            print(f"{run}: {runs[run]}", flush=True)
    result = {"n_train": n_train, "variants": variants, "folds": n_folds, "cpu_count": os.cpu_count(), **runs}
    if "ray" in runs:
        for run in runs:
            if run != "ray":
                result[f"ratio_{run}_over_ray_wall_clock"] = round(runs[run]["seconds"] / runs["ray"]["seconds"], 3)
    print(result)
    return result


if __name__ == "__main__":
    main()
