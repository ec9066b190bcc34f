"""The Ray executor: each (variant, seed, fold) job is one Ray task, reserving one GPU (or N CPU cores).

Local Ray by default (a private instance on this machine, nothing to set up); a running cluster by
address (`--address auto` or `HOST:6379`). Jobs get their configs by value and open the data
source themselves, with every path made absolute here: on a cluster the data, the image cache,
runs/ and oof/ must be at the same paths on every node (a shared filesystem).

Failures: a job whose worker process or node dies is retried by Ray (`max_retries`), and the retry
resumes from the job's last checkpoint (runs/<v>/fold<k>/last.pt, written after every epoch).
Each attempt records itself in the job's run folder (runs/<v>[/seed<s>]/fold<k>/job.json) (run token, attempt, node, pid); an attempt
after the first of the same run resumes instead of starting over. A job that fails with an error
(bad input, a bug) is not retried; the other jobs go on, and the failures are listed at the end.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import ray
from rich.console import Console

from kit.config import CompetitionConfig
from kit.data.cache import cached_images
from kit.data.common import DataSource
from kit.errors import KitError
from kit.executors.jobs import Job, JobResult, run_job
from kit.files import write_json
from kit.paths import JOB_RECORD
from kit.progress import make_progress


def run_ray(
    jobs: list[Job],
    source: DataSource,
    console: Console,
    *,
    address: str | None = None,
    cpus_per_job: int = 1,
    gpus_per_job: float | None = None,
    max_retries: int = 3,
    job_fn: Callable[..., Path | None] = run_job,
) -> Iterator[JobResult]:
    """Submit every job as a Ray task and yield each result as it finishes.

    `gpus_per_job` None: one GPU per job when the cluster has GPUs, else none (then `cpus_per_job`
    cores and as many torch threads). The image caches are built here first, once, so jobs of one
    variant never build the same cache at the same time. Raises KitError listing the failed jobs
    after the others are done.
    """
    _warm_caches(jobs, source)
    started_here = connect(address, log_to_driver=not console.quiet)
    pending: dict = {}
    try:
        if gpus_per_job is None:
            gpus_per_job = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        _check_fits(cpus_per_job, gpus_per_job)
        task = ray.remote(_attempt).options(num_cpus=cpus_per_job, num_gpus=gpus_per_job, max_retries=max_retries, retry_exceptions=False)
        token = uuid.uuid4().hex
        pending = {task.remote(replace(job, cfg=absolute_paths(job.cfg), threads=cpus_per_job), token, job_fn): job for job in jobs}
        where = "GPU" if gpus_per_job else f"{cpus_per_job} CPU core{'s' if cpus_per_job > 1 else ''}"
        console.print(f"ray: {len(jobs)} jobs, each on {where}; cluster has {_resources_line()}")
        failures: list[str] = []
        with make_progress(console) as progress:
            bar = progress.add_task("grid (ray)", total=len(jobs))
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                progress.advance(bar)
                try:
                    preds, seconds, ran_on = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    line = str(cause) if isinstance(cause, KitError) else f"{type(cause).__name__}: {cause} (traceback in the Ray worker log)"
                    failures.append(f"{job.name}: {line}")
                    continue
                except ray.exceptions.RayError as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    failures.append(f"{job.name}: lost after {max_retries} retries ({first}); continue it with --resume")
                    continue
                console.print(f"{job.name}: {'done' if preds else 'stopped'} in {seconds:.0f}s on {ran_on}")
                yield JobResult(job, preds, seconds, ran_on)
        if failures:
            raise KitError(f"{len(failures)} of {len(jobs)} jobs failed: " + "; ".join(failures))
    finally:
        for ref in pending:  # interrupted: stop what is still running (its last.pt stays for --resume)
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


def connect(address: str | None, log_to_driver: bool = True) -> bool:
    """Join Ray: the running instance of this process, a cluster by address, or a new private local one.
    Returns True when this call started it (the caller then shuts it down)."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=log_to_driver, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KitError(
            f"--address {address}: cannot join a Ray cluster ({first}); start one with `ray start --head` on the head node, "
            "or leave --address out to run on this machine"
        ) from None
    return True


def absolute_paths(cfg: CompetitionConfig) -> CompetitionConfig:
    """The config with every path absolute, so a worker's working directory does not matter."""
    def absolute(p: Path) -> Path:
        return Path(p).expanduser().resolve()

    paths = cfg.paths.model_copy(update={k: absolute(v) for k, v in cfg.paths.model_dump().items()})
    return cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"dir": absolute(cfg.data.dir)}),
        "folds": cfg.folds.model_copy(update={"path": absolute(cfg.folds.path)}),
        "paths": paths,
    })


def _attempt(job: Job, token: str, job_fn: Callable[..., Path | None]) -> tuple[Path | None, float, str]:
    """One attempt at a job, inside a Ray worker. A second attempt of the same run resumes."""
    record = job.out_dir / JOB_RECORD
    previous = _read_record(record)
    attempt = previous["attempt"] + 1 if previous.get("run") == token else 1
    node = ray.get_runtime_context().get_node_id()
    entry = {"run": token, "attempt": attempt, "host": socket.gethostname(), "node_id": node, "pid": os.getpid(),
             "started": time.time(), "status": "running"}
    write_json(record, entry)
    console = Console(width=160)
    if attempt > 1:
        console.print(f"{job.name}: attempt {attempt} (the previous worker or node was lost); resuming from its last checkpoint")
    start = time.perf_counter()
    preds = job_fn(replace(job, resume=job.resume or attempt > 1), console)
    seconds = time.perf_counter() - start
    write_json(record, {**entry, "status": "done" if preds else "stopped", "seconds": seconds})
    return preds, seconds, f"{socket.gethostname()} node {node[:8]} (attempt {attempt})"


def _read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _warm_caches(jobs: list[Job], source: DataSource) -> None:
    seen: set[tuple[int, str]] = set()
    for job in jobs:
        key = (job.mcfg.image_size, str(job.cfg.paths.cache))
        if key not in seen:
            seen.add(key)
            for split in (source.train, source.test):
                cached_images(split, job.mcfg.image_size, job.cfg.paths.cache, job.cfg.data.on_bad_image, job.cfg.data.workers)


def _check_fits(cpus_per_job: int, gpus_per_job: float) -> None:
    """Refuse a request no node can ever meet (Ray would wait for it forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not any(r.get("CPU", 0) >= cpus_per_job and r.get("GPU", 0) >= gpus_per_job for r in nodes):
        biggest = max((r.get("CPU", 0) for r in nodes), default=0)
        raise KitError(
            f"--cpus-per-job {cpus_per_job}{f' --gpus-per-job {gpus_per_job:g}' if gpus_per_job else ''}: no Ray node has that much "
            f"(largest node: {biggest:g} CPU cores, {_resources_line()}); ask for less"
        )


def _resources_line() -> str:
    total = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return f"{nodes} node{'s' if nodes != 1 else ''}, {total.get('CPU', 0):g} CPU cores, {total.get('GPU', 0):g} GPUs"
