"""Executors: the sequential grid and the Ray grid (local Ray, a killed job, a simulated multi-node
cluster) write the same OOF bytes; bad executor options are one line.

Ray starts slowly on a small machine (about 10 s), so the module starts local Ray once and the
multi-node test, last in the file, replaces it with a two-node `ray.cluster_utils.Cluster`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console

from kit.errors import KitError
from kit.executors import Job, run_job
from kit.paths import run_dir
from kit.stages.train import train

ray = pytest.importorskip("ray", reason="Ray is the optional extra `ray` (make setup installs it)")

KILLED_FOLD = 1


def quiet() -> Console:
    return Console(quiet=True)


@pytest.fixture(scope="module")
def sequential(tiny_grid):
    """The reference: the 3-fold grid run one job after another with one CPU thread per job (the session's shared grid)."""
    return (Path(tiny_grid.cfg.paths.oof) / "tiny.npz").read_bytes()


@pytest.fixture(scope="module")
def local_ray():
    """Local Ray started by the executor's own `connect` (no address: a private instance), 2 CPUs here."""
    from kit.executors.ray import connect

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers get this file's job functions by value
    started = connect(None, log_to_driver=False)
    yield
    if started and ray.is_initialized():
        ray.shutdown()


def _records(cfg) -> list[dict]:
    return [json.loads((run_dir(cfg, "tiny", k) / "job.json").read_text()) for k in range(cfg.folds.n_folds)]


@pytest.mark.ray
@pytest.mark.slow
def test_two_cpu_jobs_at_once_on_local_ray_give_the_sequential_oof_bytes(sequential, local_ray, tiny_run, tmp_path):
    cfg = tiny_run(tmp_path)
    train(cfg, ["tiny"], None, resume=False, console=quiet(), executor="ray", cpus_per_job=1)
    assert (Path(cfg.paths.oof) / "tiny.npz").read_bytes() == sequential
    records = _records(cfg)
    assert all(r["status"] == "done" and r["attempt"] == 1 for r in records)
    spans = [(r["started"], r["started"] + r["seconds"]) for r in records]
    overlapping = [(a, b) for a in spans for b in spans if a < b and a[0] < b[1] and b[0] < a[1]]
    assert overlapping, f"no two jobs ran at the same time: {spans}"


def _dies_mid_run_once(job: Job, console=None):
    """Job function for the test: the first attempt at fold KILLED_FOLD trains one epoch (writing its
    checkpoint), then its worker process is killed as a lost node would be; the retry notes what it resumes from."""
    out = run_dir(job.cfg, job.mcfg.name, job.fold)
    if job.fold == KILLED_FOLD:
        if not (out / "killed").exists():
            run_job(replace(job, stop_after_epoch=1), console)
            (out / "killed").touch()
            os.kill(os.getpid(), signal.SIGKILL)
        checkpoint = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        (out / "retry.json").write_text(json.dumps({"resume": job.resume, "checkpoint_epoch": checkpoint["state"]["epoch"]}))
    return run_job(job, console)


@pytest.mark.ray
@pytest.mark.slow
def test_a_job_killed_mid_run_is_retried_from_its_checkpoint(sequential, local_ray, tiny_run, tmp_path):
    from kit.executors.ray import run_ray

    cfg = tiny_run(tmp_path)
    train(cfg, ["tiny"], [0, 2], resume=False, console=quiet(), executor="ray", cpus_per_job=1)  # the other folds first
    from kit.config import load_model
    from kit.data.sources import open_source

    source = open_source(cfg)
    job = Job(cfg, load_model("tiny", cfg), KILLED_FOLD, resume=False)
    (result,) = list(run_ray([job], source, quiet(), cpus_per_job=1, max_retries=2, job_fn=_dies_mid_run_once))
    out = run_dir(cfg, "tiny", KILLED_FOLD)
    assert json.loads((out / "retry.json").read_text()) == {"resume": True, "checkpoint_epoch": 1}
    assert json.loads((out / "job.json").read_text())["attempt"] == 2
    assert "attempt 2" in result.where
    train(cfg, ["tiny"], None, resume=True, console=quiet())  # every fold done: skipped, OOF assembled
    assert (Path(cfg.paths.oof) / "tiny.npz").read_bytes() == sequential


def test_bad_executor_options_are_one_line(tiny_run, tmp_path):
    cfg = tiny_run(tmp_path)
    with pytest.raises(KitError, match="--executor 'dask'"):
        train(cfg, ["tiny"], None, resume=False, console=quiet(), executor="dask")
    with pytest.raises(KitError, match="--address and --gpus-per-job are for --executor ray"):
        train(cfg, ["tiny"], None, resume=False, console=quiet(), address="auto")


@pytest.mark.ray
@pytest.mark.slow
def test_a_request_no_node_can_meet_is_refused(local_ray, tiny_run, tmp_path):
    cfg = tiny_run(tmp_path)
    with pytest.raises(KitError, match="--cpus-per-job 64: no Ray node has that much"):
        train(cfg, ["tiny"], None, resume=False, console=quiet(), executor="ray", cpus_per_job=64)


@pytest.mark.ray
@pytest.mark.slow
def test_seed_jobs_run_at_once_on_local_ray_each_in_its_folder_with_the_sequential_bytes(local_ray, tiny_run, tmp_path):
    import numpy as np

    from kit.config import load_model

    cfg = tiny_run(tmp_path / "ray", epochs=1, seeds=[0, 7])
    train(cfg, ["tiny"], [0], resume=False, console=quiet(), executor="ray", cpus_per_job=1)
    seed0, seed7 = run_dir(cfg, "tiny", 0), run_dir(cfg, "tiny", 0, seed=7)
    assert seed7 == Path(cfg.paths.runs) / "tiny" / "seed7" / "fold0"
    records = [json.loads((d / "job.json").read_text()) for d in (seed0, seed7)]
    assert all(r["status"] == "done" for r in records)
    with np.load(seed0 / "preds.npz") as a, np.load(seed7 / "preds.npz") as b:
        assert not np.allclose(a["val_logits"], b["val_logits"])
        ray_logits = b["val_logits"]
    local = tiny_run(tmp_path / "local", epochs=1, seeds=[0, 7])
    preds = run_job(Job(local, load_model("tiny", local), 0, threads=1, seed=7), quiet())
    with np.load(preds) as c:
        assert np.array_equal(c["val_logits"], ray_logits)


@pytest.mark.ray
@pytest.mark.slow
def test_the_grid_runs_on_a_two_node_cluster(sequential, tiny_run, tmp_path):
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()  # the module's local Ray: this test brings its own cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        cfg = tiny_run(tmp_path)
        train(cfg, ["tiny"], None, resume=False, console=quiet(), executor="ray", address=cluster.address, cpus_per_job=1)
        assert (Path(cfg.paths.oof) / "tiny.npz").read_bytes() == sequential
        assert len({r["node_id"] for r in _records(cfg)}) == 2  # one CPU per node: the jobs were spread
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_cli_train_with_an_unknown_executor_is_one_line(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from kit.cli import app

    cfg = tiny_run(tmp_path)
    config = tmp_path / "competition.toml"
    config.write_text(cfg.source_file.read_text())
    result = CliRunner().invoke(app, ["--config", str(config), "train", "--executor", "dask"])
    assert isinstance(result.exception, KitError) and "--executor 'dask': use one of local, ray" in str(result.exception)
