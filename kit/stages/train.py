"""Stage `kit train`: every (variant, seed, fold) job on an executor, then the OOF of each variant whose folds are all done."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
from rich.console import Console

from kit import timings
from kit.config import CompetitionConfig, load_model, with_overrides
from kit.data.common import DataSource
from kit.data.folds import load_fold_assignment
from kit.data.sources import open_source
from kit.errors import KitError
from kit.executors import EXECUTORS, Executor, Job, JobResult
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

    `executor`: a name in `kit.executors.EXECUTORS`; "local" runs the jobs one after another here, "ray" runs
    them as Ray tasks (local Ray, or the cluster at `address`). `cpus_per_job` sets each job's torch threads (and, on Ray, the cores
    it reserves; default 1 there, all cores locally); `gpus_per_job` (Ray only) defaults to one GPU per
    job when the cluster has GPUs. A variant's OOF is written as soon as its last fold finishes. A variant
    with `seeds` has a job per (seed, fold), each seed's OOF written when its folds are done and the
    variant's (the seeds' mean) when all are. `overrides` (`--epochs`, `--image-size`, ...) replace keys
    of every variant before the jobs are built, so they are part of each job's identity.
    """
    console = console or Console()
    runner = _executor(executor, console, address=address, cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job)
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
    results = runner.run(jobs, source, fold_of)
    _assemble_when_done(cfg, jobs, results, source, fold_of, console)


def _executor(executor: str, console: Console, *, address: str | None, cpus_per_job: int | None, gpus_per_job: float | None) -> Executor:
    """The registered executor `executor` with its options checked (before any work)."""
    if executor not in EXECUTORS:
        raise KitError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS.names())}")
    return EXECUTORS.get(executor)(console=console, address=address, cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job)


def _fold_list(cfg: CompetitionConfig, folds: list[int] | None) -> list[int]:
    """The folds to train (--fold, default all), each checked against folds.n_folds."""
    n_folds = cfg.folds.n_folds
    fold_list = list(range(n_folds)) if folds is None else list(folds)
    bad = [k for k in fold_list if not 0 <= k < n_folds]
    if bad:
        raise KitError(f"--fold {bad[0]}: folds are 0..{n_folds - 1} (folds.n_folds in {cfg.source_file})")
    return fold_list


def _assemble_when_done(cfg: CompetitionConfig, jobs: list[Job], results: Iterable[JobResult], source: DataSource,
                        fold_of: np.ndarray, console: Console) -> None:
    """Write each seed's OOF when its last fold is done, and the variant's (over all its seeds) when all its jobs are."""
    per_seed = Counter((job.mcfg.name, job.seed) for job in jobs)
    per_variant = Counter(job.mcfg.name for job in jobs)
    n_jobs, seconds = dict(per_variant), Counter()  # a variant's train time: its jobs' wall times (kit.timings)
    for result in results:
        job = result.job
        seconds[job.mcfg.name] += result.seconds
        if result.preds is None:  # stopped early: no whole variant's time to record
            n_jobs[job.mcfg.name] = 0
        per_seed[job.mcfg.name, job.seed] -= 1
        if job.seed is not None and per_seed[job.mcfg.name, job.seed] == 0:
            assemble_oof(cfg, job.mcfg, source, fold_of, console=console, seed=job.seed)
        per_variant[job.mcfg.name] -= 1
        if per_variant[job.mcfg.name] == 0:
            assemble_oof(cfg, job.mcfg, source, fold_of, console=console)
            if n_jobs[job.mcfg.name]:
                timings.record(f"train {job.mcfg.name}", seconds[job.mcfg.name], f"{n_jobs[job.mcfg.name]} jobs, their wall times summed")
