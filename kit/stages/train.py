"""Stage `kit train`: every (variant, fold) job, then the OOF of each variant whose folds are all done."""

from __future__ import annotations

import os

import torch
from rich.console import Console

from kit.config import CompetitionConfig, load_model
from kit.data.folds import load_fold_assignment
from kit.data.sources import open_source
from kit.errors import KitError
from kit.files import ensure_writable_dir
from kit.training.assemble import assemble_oof
from kit.training.loop import train_fold
from kit.training.losses import check_recipe_for_task


def train(
    cfg: CompetitionConfig,
    variants: list[str],
    folds: list[int] | None,
    resume: bool,
    *,
    stop_after_epoch: int | None = None,
    console: Console | None = None,
) -> None:
    """Stage `kit train`: every variant × fold job, then the OOF of each variant whose folds are all done."""
    console = console or Console()
    mcfgs = [load_model(name, cfg) for name in variants]  # fail on a bad config before any training
    source = open_source(cfg)
    fold_of = load_fold_assignment(cfg, source.train.ids)
    n_folds = cfg.folds.n_folds
    fold_list = list(range(n_folds)) if folds is None else list(folds)
    bad = [k for k in fold_list if not 0 <= k < n_folds]
    if bad:
        raise KitError(f"--fold {bad[0]}: folds are 0..{n_folds - 1} (folds.n_folds in {cfg.source_file})")
    if source.train.labels is None:
        raise KitError(f"{cfg.data.dir}: the training split has no labels")
    for mcfg in mcfgs:
        check_recipe_for_task(mcfg, source.task, cfg.source_file)
    for folder in (cfg.paths.runs, cfg.paths.oof, cfg.paths.cache):  # a read-only output fails now, not after training
        ensure_writable_dir(folder)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, read at CUDA init
    was_deterministic, was_benchmark = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        for mcfg in mcfgs:
            for k in fold_list:
                train_fold(cfg, mcfg, source, fold_of, k, resume=resume, console=console, stop_after_epoch=stop_after_epoch)
            assemble_oof(cfg, mcfg, source, fold_of, console=console)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.backends.cudnn.benchmark = was_benchmark
