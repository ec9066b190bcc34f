"""Stage `kit train`: every (variant, seed, fold) job on an executor, then the OOF of each variant whose folds are all done."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np
from rich.console import Console

from kit.config import CompetitionConfig, load_model, with_overrides
from kit.data.common import DataSource
from kit.data.folds import load_fold_assignment
from kit.data.sources import open_source
from kit.errors import KitError
from kit.executors import EXECUTORS, Job, JobResult
from kit.files import ensure_writable_dir
from kit.training.assemble import assemble_oof
from kit.training.losses import check_recipe_for_task


def train(
    cfg: CompetitionConfig,
    variants: list[str],
    folds: list[int] | None,
    resume: bool,
    *,
    stop_after_epoch: int | None = None,
    console: Console | None = None,
    executor: str = "local",
    address: str | None = None,
    cpus_per_job: int | None = None,
    gpus_per_job: float | None = None,
    overrides: dict | None = None,
) -> None:
    """Stage `kit train`: every variant × fold job, then the OOF of each variant whose folds are all done.

    `executor` "local" runs the jobs one after another here; "ray" runs them as Ray tasks (local Ray,
    or the cluster at `address`). `cpus_per_job` sets each job's torch threads (and, on Ray, the cores
    it reserves; default 1 there, all cores locally); `gpus_per_job` (Ray only) defaults to one GPU per
    job when the cluster has GPUs. A variant's OOF is written as soon as its last fold finishes. A variant
    with `seeds` has a job per (seed, fold), each seed's OOF written when its folds are done and the
    variant's (the seeds' mean) when all are. `overrides` (`--epochs`, `--image-size`, ...) replace keys
    of every variant before the jobs are built, so they are part of each job's identity.
    """
    console = console or Console()
    _check_executor_options(executor, address, cpus_per_job, gpus_per_job)
    mcfgs = [with_overrides(load_model(name, cfg), overrides) for name in variants]  # fail on a bad config before any training
    source = open_source(cfg)
    fold_of = load_fold_assignment(cfg, source.train.ids)
    fold_list = _fold_list(cfg, folds)
    if source.train.labels is None:
        raise KitError(f"{cfg.data.dir}: the training split has no labels")
    for mcfg in mcfgs:
        check_recipe_for_task(mcfg, source.task, cfg.source_file)
    for folder in (cfg.paths.runs, cfg.paths.oof, cfg.paths.cache):  # a read-only output fails now, not after training
        ensure_writable_dir(folder)
    jobs = [
        Job(cfg, mcfg, k, resume, stop_after_epoch, cpus_per_job, seed=seed)
        for mcfg in mcfgs for seed in (mcfg.seeds or [None]) for k in fold_list
    ]
    results = _run_jobs(jobs, source, fold_of, console, executor, address, cpus_per_job, gpus_per_job)
    _assemble_when_done(cfg, jobs, results, source, fold_of, console)


def _check_executor_options(executor: str, address: str | None, cpus_per_job: int | None, gpus_per_job: float | None) -> None:
    if executor not in EXECUTORS:
        raise KitError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if executor == "local" and (address is not None or gpus_per_job is not None):
        raise KitError("--address and --gpus-per-job are for --executor ray")
    if cpus_per_job is not None and cpus_per_job < 1:
        raise KitError(f"--cpus-per-job {cpus_per_job}: give 1 or more cores")


def _fold_list(cfg: CompetitionConfig, folds: list[int] | None) -> list[int]:
    """The folds to train (--fold, default all), each checked against folds.n_folds."""
    n_folds = cfg.folds.n_folds
    fold_list = list(range(n_folds)) if folds is None else list(folds)
    bad = [k for k in fold_list if not 0 <= k < n_folds]
    if bad:
        raise KitError(f"--fold {bad[0]}: folds are 0..{n_folds - 1} (folds.n_folds in {cfg.source_file})")
    return fold_list


def _run_jobs(jobs: list[Job], source: DataSource, fold_of: np.ndarray, console: Console, executor: str,
              address: str | None, cpus_per_job: int | None, gpus_per_job: float | None) -> Iterator[JobResult]:
    """Each job's result as it finishes, from Ray tasks or one after another here."""
    if executor == "ray":
        try:
            from kit.executors.ray import run_ray
        except ImportError:
            raise KitError("--executor ray: Ray is not installed; run `make setup` or `pip install -e '.[ray]'`") from None

        return run_ray(jobs, source, console, address=address, cpus_per_job=cpus_per_job or 1, gpus_per_job=gpus_per_job)
    from kit.executors.local import run_local

    return run_local(jobs, source, fold_of, console)


def _assemble_when_done(cfg: CompetitionConfig, jobs: list[Job], results: Iterable[JobResult], source: DataSource,
                        fold_of: np.ndarray, console: Console) -> None:
    """Write each seed's OOF when its last fold is done, and the variant's (over all its seeds) when all its jobs are."""
    per_seed = Counter((job.mcfg.name, job.seed) for job in jobs)
    per_variant = Counter(job.mcfg.name for job in jobs)
    for result in results:
        job = result.job
        per_seed[job.mcfg.name, job.seed] -= 1
        if job.seed is not None and per_seed[job.mcfg.name, job.seed] == 0:
            assemble_oof(cfg, job.mcfg, source, fold_of, console=console, seed=job.seed)
        per_variant[job.mcfg.name] -= 1
        if per_variant[job.mcfg.name] == 0:
            assemble_oof(cfg, job.mcfg, source, fold_of, console=console)
