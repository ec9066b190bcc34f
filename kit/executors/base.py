"""The executor interface (after AutoGluon's fold-fitting strategies): an `Executor` is built once with its
options and `run(jobs)` yields each job's result as it finishes; each kind is registered by name in `EXECUTORS`.

`kit train --executor NAME` is checked against `EXECUTORS.names()`; adding an executor is a subclass
registered here (or in its own module imported by `kit.executors`). The Ray module itself is imported only
when its executor runs, so the default path never imports Ray.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
from rich.console import Console

from kit.data.common import DataSource
from kit.errors import KitError
from kit.executors.jobs import Job, JobResult
from kit.registry import Registry


class Executor(ABC):
    """Runs (variant, seed, fold) jobs somewhere; `run` yields a `JobResult` per job as each finishes."""

    def __init__(self, *, console: Console, address: str | None = None, cpus_per_job: int | None = None, gpus_per_job: float | None = None):
        self.check_options(address=address, cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job)
        self.console, self.address, self.cpus_per_job, self.gpus_per_job = console, address, cpus_per_job, gpus_per_job

    @classmethod
    def check_options(cls, *, address: str | None, cpus_per_job: int | None, gpus_per_job: float | None) -> None:
        """Refuse options this executor cannot honour, before any work (one line naming the option)."""
        if cpus_per_job is not None and cpus_per_job < 1:
            raise KitError(f"--cpus-per-job {cpus_per_job}: give 1 or more cores")

    @abstractmethod
    def run(self, jobs: list[Job], source: DataSource, fold_of: np.ndarray) -> Iterator[JobResult]:
        """Each job's result as it finishes (a failing job stops or is reported, as the executor documents)."""


EXECUTORS: Registry[type[Executor]] = Registry("executor")


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """Every job in this process, one after another; a failing job stops the grid (finished ones stay on disk)."""

    @classmethod
    def check_options(cls, *, address: str | None, cpus_per_job: int | None, gpus_per_job: float | None) -> None:
        if address is not None or gpus_per_job is not None:
            raise KitError("--address and --gpus-per-job are for --executor ray")
        super().check_options(address=address, cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job)

    def run(self, jobs: list[Job], source: DataSource, fold_of: np.ndarray) -> Iterator[JobResult]:
        from kit.executors.local import run_local

        return run_local(jobs, source, fold_of, self.console)


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Each job a Ray task (one GPU or `cpus_per_job` cores) on local Ray or the cluster at `address`
    (`kit.executors.ray`, imported here only when it runs)."""

    def run(self, jobs: list[Job], source: DataSource, fold_of: np.ndarray) -> Iterator[JobResult]:
        try:
            from kit.executors.ray import run_ray
        except ImportError:
            raise KitError("--executor ray: Ray is not installed; run `make setup` or `pip install -e '.[ray]'`") from None
        return run_ray(jobs, source, self.console, address=self.address, cpus_per_job=self.cpus_per_job or 1, gpus_per_job=self.gpus_per_job)
