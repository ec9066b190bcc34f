"""The sequential executor: every job in this process, one after another (today's `kit train`)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
from rich.console import Console

from kit.data.common import DataSource
from kit.executors.jobs import Job, JobResult, run_job


def run_local(jobs: list[Job], source: DataSource, fold_of: np.ndarray, console: Console) -> Iterator[JobResult]:
    """Run the jobs in order; a failing job stops the grid (the finished ones stay on disk)."""
    for job in jobs:
        start = time.perf_counter()
        preds = run_job(job, console, source, fold_of)
        yield JobResult(job, preds, time.perf_counter() - start, "this process")
