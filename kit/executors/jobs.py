"""One (variant, seed, fold) job: its inputs by value, and the one function that runs it wherever it runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from kit.config import CompetitionConfig, ModelConfig
from kit.data.common import DataSource
from kit.data.folds import load_fold_assignment
from kit.data.sources import open_source
from kit.paths import run_dir
from kit.training.device import cpu_threads, deterministic_algorithms
from kit.training.loop import train_fold


@dataclass(frozen=True)
class Job:
    """Everything a job needs, picklable (pydantic configs): a job on another process or node gets it by
    value and opens the data source itself."""

    cfg: CompetitionConfig
    mcfg: ModelConfig
    fold: int
    resume: bool = False
    stop_after_epoch: int | None = None
    threads: int | None = None  # torch CPU threads for the job (None: torch's default)
    seed: int | None = None  # one seed of the variant's `seeds` list (None: the competition seed, no list)

    @property
    def name(self) -> str:
        return f"{self.mcfg.name}{'' if self.seed is None else f' seed {self.seed}'} fold {self.fold}"

    @property
    def out_dir(self) -> Path:
        """The job's run folder (runs/<v>/fold<k>, or runs/<v>/seed<s>/fold<k>)."""
        return run_dir(self.cfg, self.mcfg.name, self.fold, self.seed)


@dataclass(frozen=True)
class JobResult:
    job: Job
    preds: Path | None  # <job.out_dir>/preds.npz; None when the job stopped early (stop_after_epoch)
    seconds: float = 0.0
    where: str = ""  # which process/node ran it (the Ray executor says which node and attempt)


def run_job(job: Job, console: Console | None = None, source: DataSource | None = None, fold_of: np.ndarray | None = None) -> Path | None:
    """Run one job in this process with deterministic kernels and the job's thread count.

    The sequential executor passes the data source it opened once; a job in another process opens
    it itself (same config, same files, same fingerprint)."""
    with deterministic_algorithms(), cpu_threads(job.threads):
        if source is None:
            source = open_source(job.cfg)
        if fold_of is None:
            fold_of = load_fold_assignment(job.cfg, source.train.ids)
        return train_fold(
            job.cfg, job.mcfg, source, fold_of, job.fold, resume=job.resume, console=console, stop_after_epoch=job.stop_after_epoch,
            seed=job.seed,
        )
