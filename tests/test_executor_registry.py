"""Executors behind one interface: a class registered in `EXECUTORS` is usable by name from `kit train`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.console import Console

from kit.errors import KitError
from kit.executors import EXECUTORS, Executor, JobResult, run_job
from kit.stages.train import train


def test_the_registered_executors_are_local_and_ray():
    assert EXECUTORS.names()[:2] == ["local", "ray"]
    assert all(issubclass(EXECUTORS.get(name), Executor) for name in EXECUTORS)


@pytest.mark.slow
def test_an_executor_registered_in_a_test_runs_the_grid_by_name(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(EXECUTORS, "_items", dict(EXECUTORS._items))  # the registration ends with the test
    ran: list[str] = []

    @EXECUTORS.register("reversed")
    class ReversedExecutor(Executor):
        """The jobs in reverse order, in this process."""

        def run(self, jobs, source, fold_of):
            for job in reversed(jobs):
                start = time.perf_counter()
                ran.append(job.name)
                yield JobResult(job, run_job(job, self.console, source, fold_of), time.perf_counter() - start, "test")

    cfg = tiny_run(tmp_path, epochs=1)
    train(cfg, ["tiny"], [0, 1, 2], resume=False, console=Console(quiet=True), executor="reversed")
    assert ran == ["tiny fold 2", "tiny fold 1", "tiny fold 0"]
    assert (Path(cfg.paths.oof) / "tiny.npz").is_file()  # the stage assembled the OOF from what the executor yielded


def test_options_an_executor_cannot_honour_are_one_line(tiny_run, tmp_path):
    cfg = tiny_run(tmp_path)
    with pytest.raises(KitError, match=r"--address and --gpus-per-job are for --executor ray"):
        train(cfg, ["tiny"], [0], resume=False, console=Console(quiet=True), gpus_per_job=1)
    with pytest.raises(KitError, match=r"--executor 'dask': use one of local, ray"):
        train(cfg, ["tiny"], [0], resume=False, console=Console(quiet=True), executor="dask")
